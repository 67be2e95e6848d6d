"""A RUN argument that names a file: every command says so (issue 21: `royalty payout README.md`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from train_fixtures import royalty

RUN_COMMANDS = {
    "payout": ("--revenue", "10.00"),
    "report": (),
    "audit": (),
    "generate": ("--num", "1", "--out", "{tmp}/gen"),
    "attribute": ("{tmp}",),
}
FRESH = {"generate", "report"}


@pytest.mark.parametrize("command", sorted(RUN_COMMANDS))
def test_run_that_is_a_file(command: str, tmp_path: Path) -> None:
    notes = tmp_path / "README.md"
    notes.write_text("# not a run\n")
    extra = [arg.format(tmp=tmp_path) for arg in RUN_COMMANDS[command]]
    # a fresh `python -m royalty.cli` for the commands no other test starts one for
    # (train, attribute and audit: the thread-count tests; payout: test_payout_cli)
    proc = royalty(command, notes, *extra, fresh=command in FRESH)
    assert proc.returncode == 66, proc.stderr
    assert f"{notes} is a file, not a run folder" in proc.stderr and "does not exist" not in proc.stderr
    assert proc.stdout == ""
