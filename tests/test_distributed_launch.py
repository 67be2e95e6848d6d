"""`royalty train` under torchrun and `accelerate launch`: the tests that start a launcher of their own.

What the launchers must honour or refuse, the target side shared over processes, a
dying worker; the claims and tolerances of test_distributed.py (distributed_fixtures.py).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distributed_fixtures import (
    BASE, SGD, SGD_RTOL, _assert_same_run, _check, _launch_env, _targets_folder, _values, accelerate, torchrun,
)
from royalty.attribution.contract import run_folder
from train_fixtures import make_folders, royalty


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    return make_folders(tmp_path_factory.mktemp("dist-data"))


@pytest.mark.parametrize(
    ("launch", "option", "message"),
    [
        (("--multi_gpu", "--mixed_precision", "fp16"), (), "accelerate launch --mixed_precision fp16: royalty trains in no or bf16"),
        (("--multi_gpu", "--mixed_precision", "bf16"), ("--mixed-precision", "no"),
         "--mixed-precision no but accelerate launch --mixed_precision bf16"),
        # accelerate's --cpu starts one process and leaves the rest to mpirun: not a silent 1-process run
        (("--cpu",), (), "accelerate launch --cpu with several processes starts only one"),
    ],
    ids=["fp16", "conflict", "cpu-without-mpirun"],
)
def test_accelerate_launches_royalty_cannot_honour_are_refused(folders, tmp_path, launch, option, message) -> None:
    data, targets = folders
    out = tmp_path / "refused"
    proc = accelerate("train", data, "--targets", targets, "--out", out, "--batch-size", "4", *option, *SGD,
                      launch=launch, timeout=300)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-3000:]
    # the worker's own exit code is the usage error's (docs/design.md §5); the launcher reports it
    assert re.search(r"exit(code: | status )2\b", proc.stderr), proc.stderr[-3000:]
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    ("owners", "recipe", "rtol", "weights_atol"),
    [
        # 3 targets over 2 processes: shares of 1 and 2, gathered back (order 2: the HVPs too;
        # AdamW's preconditioned target side over processes: test_distributed.py, two-adam2)
        (("ann", "bob", "ann"), (*SGD, "--order", "2"), SGD_RTOL, 1e-5),
        # 1 target, fewer than processes: every process evaluates it (no empty share)
        (("bob",), SGD, SGD_RTOL, 1e-5),
    ],
    ids=["uneven-shares", "fewer-targets-than-processes"],
)
def test_target_side_shared_over_processes_equals_one_process(folders, tmp_path, owners, recipe, rtol, weights_atol) -> None:
    data, _ = folders
    targets = _targets_folder(tmp_path / "targets", owners)
    args = ("--targets", targets, "--batch-size", "4", *recipe)
    _check(royalty("train", data, "--out", tmp_path / "one", *args))
    _check(torchrun("train", data, "--out", tmp_path / "two", *args))
    assert _values(tmp_path / "two")["target_id"].nunique() == len(owners)
    _assert_same_run(tmp_path / "one", tmp_path / "two", rtol, weights_atol)


def test_batch_not_divisible_by_processes_is_a_usage_error(folders, tmp_path) -> None:
    data, targets = folders
    proc = torchrun("train", data, "--targets", targets, "--out", tmp_path / "odd", "--batch-size", "3", *SGD, timeout=300)
    assert proc.returncode != 0
    assert "--batch-size 3 does not split evenly over 2 processes" in proc.stderr
    assert not (tmp_path / "odd").exists()  # refused before anything was written


def test_a_dying_process_ends_the_job(folders, tmp_path) -> None:
    """Kill one worker mid-run: the job must fail promptly, not hang, and write no values."""
    data, targets = folders
    out = tmp_path / "killed"
    env = _launch_env()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "royalty.cli",
           "train", str(data), "--targets", str(targets), "--out", str(out), "--batch-size", "4",
           *BASE[:-4], "--steps", "500", "--lr", "0.001"]
    launcher = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out / ".royalty-run").exists():
            time.sleep(0.1)  # both workers have joined (rank 0 wrote the marker after a barrier)
        assert (out / ".royalty-run").exists(), "the job did not start"
        worker = _worker(launcher.pid, local_rank=1)
        os.kill(worker, signal.SIGKILL)
        _, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert launcher.returncode != 0
    assert "local_rank: 1" in stderr
    assert not (out / run_folder.VALUES).exists()


def _worker(launcher_pid: int, local_rank: int) -> int:
    """The pid of the launcher's worker with the given LOCAL_RANK."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == launcher_pid and f"LOCAL_RANK={local_rank}".encode() in env:
            return int(entry.name)
    raise AssertionError(f"no worker with LOCAL_RANK={local_rank}")
