"""Every command that reads a finished run back checks what it started from: a run trained
from `--model DIR` whose DIR changed since is refused by `attribute` and `audit` alike
(the audit used to open runs its own way, without this check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import DDPMPipeline

from royalty.attribution.model.diffusion import build_default_unet, default_scheduler
from train_fixtures import TINY, make_data, make_targets, royalty


@pytest.fixture(scope="module")
def run_from_a_base(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("base")
    base = root / "base"
    DDPMPipeline(unet=build_default_unet(16, seed=3), scheduler=default_scheduler()).save_pretrained(base)
    data, targets = make_data(root / "data"), make_targets(root / "targets")
    royalty("train", data, "--targets", targets, "--out", root / "run", "--model", base, "--steps", "2", *TINY, check=True)
    return root / "run", base, targets


@pytest.mark.parametrize("command", ["attribute", "audit"])
def test_a_changed_starting_model_is_refused(run_from_a_base, command, tmp_path) -> None:
    run, base, targets = run_from_a_base
    config = base / "unet" / "config.json"
    original = config.read_text()
    try:
        config.write_text(original.replace("{", '{"_changed": 1,', 1))
        args = ("attribute", run, targets, "--name", "x") if command == "attribute" else ("audit", run)
        proc = royalty(*args, "--quiet")
        assert proc.returncode == 65, proc.stderr
        assert "the model the run started from" in proc.stderr and "changed since training" in proc.stderr
    finally:
        config.write_text(original)


READERS = {
    "payout": lambda run, targets, out: ("payout", run, "--revenue", "100.00"),
    "report": lambda run, targets, out: ("report", run, "--out", out / "r.html"),
    "attribute": lambda run, targets, out: ("attribute", run, targets, "--name", "x"),
    "generate": lambda run, targets, out: ("generate", run, "--out", out / "gen", "--num", "1"),
    "audit": lambda run, targets, out: ("audit", run),
}
# which commands read which recorded file; every one of them is verified on opening
TAMPERED = [(f, c) for f in ("values.parquet", "steps.parquet") for c in READERS] + [
    ("model/unet/config.json", c) for c in ("attribute", "generate", "audit")
]


@pytest.mark.parametrize(("tampered", "command"), TAMPERED)
def test_every_reader_refuses_a_modified_run_folder(run_from_a_base, tampered, command, tmp_path) -> None:
    """One way to open a run (attribution/contract/opened.py): a file changed after training
    is refused by each command that opens the run, before it writes anything."""
    import shutil

    source, _, targets = run_from_a_base
    run = tmp_path / "run"
    shutil.copytree(source, run)
    with open(run / tampered, "ab") as fh:
        fh.write(b"\n")
    proc = royalty(*READERS[command](run, targets, tmp_path), "--quiet")
    assert proc.returncode == 65, (proc.returncode, proc.stderr)
    assert "does not match" in proc.stderr, proc.stderr
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "gen").exists()
    assert not (run / "attributions").exists()
