"""Running `royalty train` again on the folder an earlier run left: interrupted, failed or finished.

Nothing the earlier run saved (a finished run, checkpoints) is lost without --force; a
run that saved nothing never stands in the way; every refusal says which case it is.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from royalty.attribution.contract import run_folder
from train_fixtures import TINY, assert_fails, data, royalty, targets, train  # noqa: F401 (data, targets: fixtures)

MARKER = ".royalty-run"




def start(data, targets, out, *extra) -> subprocess.Popen:
    """A long run in the background, with Ctrl-C's default meaning whatever the test runner's."""
    cmd = [sys.executable, "-m", "royalty.cli", "train", str(data), "--targets", str(targets), "--out", str(out),
           "--steps", "500", *TINY, *map(str, extra)]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "NO_COLOR": "1"},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not path.exists() and proc.poll() is None:
        time.sleep(0.05)
    assert path.exists(), f"the run did not get to {path.name}"


def test_ctrl_c_says_how_to_continue(tmp_path, data, targets) -> None:
    out = tmp_path / "out"
    proc = start(data, targets, out, "--checkpoint-every", "1")
    try:
        wait_for(out / "checkpoints" / "step-00000001.pt", proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert stdout == ""
    assert "interrupted" in stderr and "run the same command with --resume" in stderr, stderr
    assert "valued step" in stderr and "continues from there" in stderr, stderr
    assert not (out / run_folder.MANIFEST).exists()
    # the same command without --resume names this run, and both ways on
    again = royalty("train", data, "--targets", targets, "--out", out, "--steps", "500", *TINY, "--checkpoint-every", "1")
    assert_fails(again, 73, "unfinished run of this same recipe", "--resume", "--force")


def test_an_unfinished_run_with_checkpoints_is_kept(tmp_path, data, targets) -> None:
    """The state a kill after the step-1 checkpoint leaves: checkpoints, no outputs."""
    out = tmp_path / "out"
    args = ("--steps", "2", "--checkpoint-every", "1")
    assert train(data, targets, out, *args).returncode == 0
    for done in ("model", run_folder.VALUES, run_folder.STEPS, run_folder.MANIFEST):
        path = out / done
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert_fails(
        train(data, targets, out, *args), 73, "unfinished run of this same recipe", "1 valued step done", "--resume", "--force"
    )
    assert_fails(train(data, targets, out, *args, "--seed", "1"), 73, "unfinished run of another recipe", "--force")
    assert (out / "checkpoints" / "step-00000001.pt").is_file()
    # resuming with other options is refused, naming each option that differs and both values
    assert_fails(train(data, targets, out, *args, "--resume", "--seed", "1", "--lr", "0.07"), 2,
                 "started with different inputs or options", "--lr 0.05 then, 0.07 now", "--seed 0 then, 1 now")
    assert train(data, targets, out, *args, "--resume").returncode == 0
    assert (out / run_folder.MANIFEST).is_file()


def test_a_diverged_run_does_not_block_the_retry(tmp_path, data, targets) -> None:
    new, made = tmp_path / "new", tmp_path / "made"
    made.mkdir()
    for out in (new, made):
        assert_fails(train(data, targets, out, "--lr", "1e8", "--steps", "2"), 1, "diverged")
    assert not new.exists()  # the run made it: it goes
    assert made.is_dir() and not any(made.iterdir())  # the user made it: it stays, empty
    # the retry with a lower learning rate is another recipe: it needs no --force
    assert train(data, targets, made).returncode == 0
    assert (made / run_folder.MANIFEST).is_file()


def test_a_diverged_run_keeps_its_checkpoints(tmp_path, data, targets) -> None:
    """A failure after a checkpoint (here the warm-up's) leaves it, protected as any run's."""
    out = tmp_path / "out"
    assert_fails(train(data, targets, out, "--lr", "1e8", "--steps", "2", "--checkpoint-every", "1"), 1, "diverged")
    assert (out / "checkpoints" / "step-00000000.pt").is_file()
    assert_fails(train(data, targets, out, "--checkpoint-every", "1"), 73, "unfinished run of another recipe", "--force")
    assert (out / "checkpoints" / "step-00000000.pt").is_file()


def test_a_run_killed_before_saving_anything_does_not_block_the_retry(tmp_path, data, targets) -> None:
    out = tmp_path / "out"
    proc = start(data, targets, out)
    try:
        wait_for(out / MARKER, proc)
    finally:
        proc.kill()
        proc.communicate()
    assert not (out / "checkpoints").exists() and not (out / run_folder.MANIFEST).exists()
    assert train(data, targets, out).returncode == 0  # another recipe (1 step, not 500), no --force
    assert (out / run_folder.MANIFEST).is_file()
