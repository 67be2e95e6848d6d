"""`royalty train` under torchrun (2 CPU processes, gloo), gradient accumulation and bf16.

The claim: a data-parallel run, or an accumulated one, is the one-process run with the
same global batch and seed — same batches, draws, targets and value formula — except
for the order in which floats are summed (the gradient all-reduce, the micro-batches).
Those rounding differences are why the comparisons below have tolerances, stated with
each; a plain one-process run stays bit-identical to what it was (test_train_cli).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from royalty.attribution.contract import run_folder
from train_fixtures import draw, make_data, make_targets, royalty

BASE = ("--resolution", "16", "--timestep-draws", "2", "--quiet", "--steps", "3", "--warmup-steps", "1")
SGD = (*BASE, "--lr", "0.05")
ADAM2 = (*BASE, "--optimizer", "adamw", "--lr", "0.002", "--order", "2")
# float32 training: a different summation order moves each gradient by ~1e-7 relative,
# and the values (float64 dots of float32 factors) by as much; observed ≤ 3e-7 relative
SGD_RTOL = 1e-5
# Adam's early steps are ≈ lr·sign(g): where a gradient component is ~0 the summation
# order can flip its sign, so weights may differ by up to 2·lr per step in such
# coordinates (observed 6 % of lr) and values by ~1e-4 of their scale (observed 3e-5)
ADAM_RTOL = 1e-3


def _launch_env() -> dict[str, str]:
    """What each launched worker runs with: plain stderr, one thread each on the shared cores."""
    return {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": "1"}


def torchrun(*args: str | os.PathLike, nproc: int = 2, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI under torchrun; --standalone picks a free port for the rendezvous."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "royalty.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_launch_env(), timeout=timeout)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accelerate(*args: str | os.PathLike, launch: tuple[str, ...] = ("--multi_gpu",), nproc: int = 2,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """The real CLI under `accelerate launch`, as its users start it.

    --multi_gpu is accelerate's torch.distributed launcher (it runs on CPUs where there is
    no GPU); the options it would otherwise warn about are given; a free port, not its
    fixed default, so concurrent test runs do not meet.
    """
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch, "--num_processes", str(nproc),
           "--num_machines", "1", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "royalty.cli", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, env=_launch_env(), timeout=timeout)


def _check(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dist-data")
    return make_data(root / "train"), make_targets(root / "targets")


@pytest.fixture(scope="module")
def runs(folders, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each recipe once: (run folder, stdout)."""
    data, targets = folders
    base = tmp_path_factory.mktemp("dist-runs")
    recipes = {
        "one": (royalty, ("--batch-size", "4", "--checkpoint-every", "2", *SGD)),
        "two": (torchrun, ("--batch-size", "4", "--checkpoint-every", "2", *SGD)),
        "accelerate": (accelerate, ("--batch-size", "4", *SGD)),
        "accumulated": (royalty, ("--batch-size", "2", "--gradient-accumulation-steps", "2", *SGD)),
        "two-accumulated": (torchrun, ("--batch-size", "2", "--gradient-accumulation-steps", "2", *SGD)),
        "one-adam2": (royalty, ("--batch-size", "4", *ADAM2)),
        "two-adam2": (torchrun, ("--batch-size", "4", *ADAM2)),
    }
    out = {}
    for name, (launch, args) in recipes.items():
        proc = _check(launch("train", data, "--targets", targets, "--out", base / name, *args))
        out[name] = (base / name, proc.stdout)
    return out


def _values(run: Path) -> pd.DataFrame:
    return pd.read_parquet(run / run_folder.VALUES).sort_values(["sample_id", "target_id"]).reset_index(drop=True)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from diffusers import UNet2DModel

    return UNet2DModel.from_pretrained(run / run_folder.MODEL_DIR / "unet").state_dict()


def _assert_same_run(a: Path, b: Path, rtol: float, weights_atol: float) -> None:
    va, vb = _values(a), _values(b)
    assert va[["sample_id", "owner", "target_id"]].equals(vb[["sample_id", "owner", "target_id"]])
    for column in ("value", "value_first_order", "value_second_order", "value_specific"):
        x, y = va[column].to_numpy(), vb[column].to_numpy()
        scale = max(float(np.abs(x).max()), 1e-12)
        assert float(np.abs(x - y).max()) <= rtol * scale, (column, float(np.abs(x - y).max()), scale)
    sa, sb = pd.read_parquet(a / run_folder.STEPS), pd.read_parquet(b / run_folder.STEPS)
    assert sa["step"].tolist() == sb["step"].tolist()
    for column in ("train_loss", "target_loss_before", "target_loss_after", "value_sum"):
        np.testing.assert_allclose(sb[column], sa[column], rtol=rtol, atol=0)
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    worst = max(float((wa[k] - wb[k]).abs().max()) for k in wa)
    assert worst <= weights_atol, worst


def test_two_processes_equal_one_with_the_global_batch(runs) -> None:
    (one, _), (two, stdout) = runs["one"], runs["two"]
    # float32 weights after 4 SGD steps at lr 0.05: observed ≤ 1.2e-7 apart
    _assert_same_run(one, two, SGD_RTOL, weights_atol=1e-5)
    manifest = json.loads((two / run_folder.MANIFEST).read_text())
    assert manifest["world_size"] == 2
    assert json.loads((one / run_folder.MANIFEST).read_text())["world_size"] == 1
    summary = json.loads(stdout)  # rank 0 alone prints the summary: one JSON document
    assert summary["world_size"] == 2 and summary["steps"] == 3
    # rank 0 alone wrote checkpoints, each recorded in the manifest
    assert sorted(manifest["checkpoints"]) == ["step-00000000.pt", "step-00000002.pt"]
    assert manifest["outputs"] == run_folder.output_hashes(two)


def test_accelerate_launch_equals_one_process_with_the_global_batch(runs) -> None:
    (one, _), (acc, stdout) = runs["one"], runs["accelerate"]
    _assert_same_run(one, acc, SGD_RTOL, weights_atol=1e-5)  # the tolerances of torchrun's test
    assert json.loads(stdout)["world_size"] == 2
    manifest = json.loads((acc / run_folder.MANIFEST).read_text())
    assert manifest["world_size"] == 2 and manifest["config"]["mixed_precision"] == "no"


def test_accelerate_mixed_precision_is_honoured(folders, tmp_path) -> None:
    """`accelerate launch --mixed_precision bf16` trains in bf16 as --mixed-precision bf16 does."""
    data, targets = folders
    by_option = tmp_path / "option"
    _check(torchrun("train", data, "--targets", targets, "--out", by_option, "--batch-size", "4",
                    "--mixed-precision", "bf16", *SGD))
    by_launcher = tmp_path / "launcher"
    _check(accelerate("train", data, "--targets", targets, "--out", by_launcher, "--batch-size", "4", *SGD,
                      launch=("--multi_gpu", "--mixed_precision", "bf16")))
    assert json.loads((by_launcher / run_folder.MANIFEST).read_text())["config"]["mixed_precision"] == "bf16"
    # the same recipe on the same 2 processes: the same bits, whichever way bf16 was asked for
    assert _values(by_option).equals(_values(by_launcher))


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


def test_gradient_accumulation_is_the_union_of_micro_batches(runs) -> None:
    """2 micro-batches of 2 rows = one batch of 4, on one process and on two."""
    one = runs["one"][0]
    _assert_same_run(one, runs["accumulated"][0], SGD_RTOL, weights_atol=1e-5)
    _assert_same_run(one, runs["two-accumulated"][0], SGD_RTOL, weights_atol=1e-5)
    config = json.loads((runs["accumulated"][0] / run_folder.MANIFEST).read_text())["config"]
    assert config["gradient_accumulation_steps"] == 2 and config["batch_size"] == 2


def test_adamw_second_order_on_two_processes(runs) -> None:
    """AdamW's P needs the all-reduced gradient, order 2's HVP the global batch gradient."""
    one, two = runs["one-adam2"][0], runs["two-adam2"][0]
    assert _values(one)["value_second_order"].abs().max() > 0
    _assert_same_run(one, two, ADAM_RTOL, weights_atol=0.002)  # = lr: see ADAM_RTOL


def _targets_folder(root: Path, owners: tuple[str, ...]) -> Path:
    """One target per (concept, owner) pair: as many targets as wanted, in a fixed order."""
    root.mkdir(parents=True)
    lines = ["file_name,target_id,owner"]
    for i, owner in enumerate(owners):
        concept = ("bar", "cross")[i // 2 % 2]
        draw(concept, owner).save(root / f"{i}.png")
        lines.append(f"{i}.png,{concept}-{owner}-{i},{owner}")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize(
    ("owners", "recipe", "rtol", "weights_atol"),
    [
        # 3 targets over 2 processes: shares of 1 and 2, gathered back (order 2: the HVPs too)
        (("ann", "bob", "ann"), ADAM2, ADAM_RTOL, 0.002),
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


def test_resume_on_another_number_of_processes_is_refused(runs, tmp_path) -> None:
    import shutil

    two = shutil.copytree(runs["two"][0], tmp_path / "two")
    config = json.loads((two / run_folder.MANIFEST).read_text())["config"]
    proc = royalty("train", config["data"], "--targets", config["targets"], "--out", two, "--resume",
                   "--batch-size", "4", "--checkpoint-every", "2", *SGD)
    assert proc.returncode == 2, proc.stderr
    assert "checkpointed on 2 process(es)" in proc.stderr


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


def test_bf16_mixed_precision_values_are_close_to_float32(folders, runs, tmp_path) -> None:
    """bf16 autocast of the training forward; per-sample gradients and dots in float32/64.

    The update is bf16 training's own; the values are exact for the bf16 activations and
    output gradients the step used, so they differ from a float32 run by bf16's rounding:
    observed 0.2 % (relative L2) after 4 steps. The bound here is 2 %.
    """
    data, targets = folders
    out = tmp_path / "bf16"
    _check(royalty("train", data, "--targets", targets, "--out", out, "--batch-size", "4", "--mixed-precision", "bf16", *SGD))
    a, b = _values(runs["one"][0])["value"].to_numpy(), _values(out)["value"].to_numpy()
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.02
    assert json.loads((out / run_folder.MANIFEST).read_text())["config"]["mixed_precision"] == "bf16"


def test_bad_accumulation_and_precision_options(folders, tmp_path) -> None:
    data, targets = folders
    for args, message in (
        (("--gradient-accumulation-steps", "0"), "--gradient-accumulation-steps must be at least 1"),
        (("--mixed-precision", "fp8"), "--mixed-precision must be one of no, bf16"),
    ):
        proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "bad", *args, *SGD)
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
