"""The tests' warm CLI server (cli_server.py) runs a command line as a fresh interpreter would.

Most CLI tests run `royalty` as children forked from it (train_fixtures.royalty); here a
child and a fresh `python -m royalty.cli` must give the same exit status, stdout and
stderr, through each way the entry point ends: a usage error typer reports, a domain
error main() maps to its exit code, a document on stdout.
"""

from __future__ import annotations

import os

import train_fixtures
from train_fixtures import royalty


def test_a_child_of_the_server_is_a_fresh_interpreter(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("ROYALTY_TEST_FRESH", raising=False)  # the server's children, whatever the run asks
    cases = [
        ("--version",),
        ("payout", tmp_path / "nope", "--revenue", "1.00"),  # exit 66 from main()
        ("payout", tmp_path, "--revenue", "1.00", "--basis", "cooked"),  # typer's usage error: exit 2
    ]
    served = train_fixtures._SERVER.served
    for args in cases:
        child, fresh = royalty(*args), royalty(*args, fresh=True)
        assert (child.returncode, child.stdout, child.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr), args
    assert [royalty(*args).returncode for args in cases] == [0, 66, 2]
    assert train_fixtures._SERVER.served == served + 2 * len(cases), "the server ran none of them: all were fresh"


def test_a_child_has_its_own_working_directory(tmp_path) -> None:
    """A command line's cwd is its own, and not the next one's."""
    (tmp_path / "run").mkdir()
    first = royalty("payout", "run", "--revenue", "1.00", cwd=tmp_path)
    assert first.returncode == 66 and "run.json is missing" in first.stderr, first.stderr  # found in tmp_path
    again = royalty("payout", "run", "--revenue", "1.00")  # from this process's cwd: no such run
    assert again.returncode == 66 and "does not exist" in again.stderr, again.stderr
    assert os.getcwd() != str(tmp_path)
