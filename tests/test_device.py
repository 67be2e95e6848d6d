"""`--device`: which torch.device each name means for a process, and what is refused.

The choice is a pure function of the name, the launcher's place and what the machine
has, so every branch is tested here without a GPU; the commands' refusals run as real
subprocesses on this CPU-only machine (a CPU build of torch).
"""

from __future__ import annotations

import json

import pytest
import torch

from royalty.attribution.training.config import TrainConfig
from royalty.attribution.training.device import Hardware, resolve_device, use_device
from royalty.attribution.training.distributed import Dist
from royalty.errors import UsageError
from train_fixtures import TINY, make_data, make_targets, royalty

TWO_GPUS = Hardware(cuda_devices=2, torch_cuda="12.8")


@pytest.mark.parametrize(
    ("name", "dist", "expected"),
    [
        ("cpu", Dist(), torch.device("cpu")),
        ("cpu", Dist(rank=1, world=2, local_rank=1), torch.device("cpu")),
        ("cuda", Dist(), torch.device("cuda", 0)),
        ("cuda:1", Dist(), torch.device("cuda", 1)),
        # under a launcher, each process its own GPU: the one of its local rank
        ("cuda", Dist(rank=1, world=2, local_rank=1), torch.device("cuda", 1)),
        ("cuda", Dist(rank=3, world=4, local_rank=1), torch.device("cuda", 1)),
    ],
)
def test_device_each_name_means(name, dist, expected) -> None:
    assert resolve_device(name, dist, TWO_GPUS) == expected


@pytest.mark.parametrize(
    ("name", "dist", "hardware", "needles"),
    [
        ("cuda", Dist(), Hardware(0, None), ("--device cuda", "CPU build", "--device cpu")),
        ("cuda:0", Dist(), Hardware(0, "12.8"), ("CUDA 12.8", "sees no GPU")),
        ("cuda:2", Dist(), TWO_GPUS, ("cuda:2", "2 GPU(s)")),
        ("cuda", Dist(rank=2, world=3, local_rank=2), TWO_GPUS, ("LOCAL_RANK 2", "2 GPU(s)")),
        ("cuda:0", Dist(rank=0, world=2, local_rank=0), TWO_GPUS, ("all 2 processes on one GPU", "--device cuda")),
        ("gpu", Dist(), TWO_GPUS, ("cpu, cuda or cuda:N", "'gpu'")),
        ("cuda:", Dist(), TWO_GPUS, ("cpu, cuda or cuda:N",)),
        ("CUDA", Dist(), TWO_GPUS, ("cpu, cuda or cuda:N",)),
    ],
)
def test_device_refusals_say_why(name, dist, hardware, needles) -> None:
    with pytest.raises(UsageError) as err:
        resolve_device(name, dist, hardware)
    for needle in needles:
        assert needle in str(err.value)


def test_this_machine_is_what_the_cli_tests_assume() -> None:
    # the subprocess refusals below are only meaningful where torch sees no GPU
    assert Hardware.here().cuda_devices == 0
    with pytest.raises(UsageError, match="--device cuda"):
        resolve_device("cuda")


def test_use_device_leaves_a_cpu_process_as_it_was() -> None:
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32)
    use_device(torch.device("cpu"))
    assert (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.allow_tf32) == before


def test_device_is_in_the_recipe_except_the_cpu_default(tmp_path) -> None:
    base = TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path)
    # runs recorded before --device existed keep their recipe (and run id)
    assert TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path, device="cpu").recipe_hash() == base.recipe_hash()
    # another device rounds differently: --resume must not mix them
    assert TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path, device="cuda").recipe_hash() != base.recipe_hash()
    with pytest.raises(UsageError, match="--device"):
        TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path, device="tpu")


def test_train_on_a_gpu_this_machine_lacks_is_refused_before_anything_is_written(tmp_path) -> None:
    data, targets, out = make_data(tmp_path / "train"), make_targets(tmp_path / "targets"), tmp_path / "run"
    proc = royalty("train", data, "--targets", targets, "--out", out, "--steps", "1", *TINY, "--device", "cuda")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "--device cuda" in proc.stderr and "--device cpu" in proc.stderr
    assert not out.exists()


def test_train_device_syntax_is_checked(tmp_path) -> None:
    data, targets, out = make_data(tmp_path / "train"), make_targets(tmp_path / "targets"), tmp_path / "run"
    proc = royalty("train", data, "--targets", targets, "--out", out, "--steps", "1", *TINY, "--device", "gpu:0")
    assert proc.returncode == 2, proc.stderr
    assert "cpu, cuda or cuda:N" in proc.stderr
    assert not out.exists()


def test_explicit_cpu_is_the_default_run(tmp_path) -> None:
    data, targets = make_data(tmp_path / "train"), make_targets(tmp_path / "targets")
    runs = []
    for name, extra in (("default", ()), ("cpu", ("--device", "cpu"))):
        out = tmp_path / name
        royalty("train", data, "--targets", targets, "--out", out, "--steps", "2", *TINY, *extra, check=True)
        runs.append(out)
    assert (runs[0] / "values.parquet").read_bytes() == (runs[1] / "values.parquet").read_bytes()
    manifests = [json.loads((r / "run.json").read_text()) for r in runs]
    assert manifests[0]["run_id"] == manifests[1]["run_id"]
    assert manifests[1]["config"]["device"] == "cpu"


def test_generate_on_a_gpu_this_machine_lacks_is_refused(tmp_path) -> None:
    data, targets, run = make_data(tmp_path / "train"), make_targets(tmp_path / "targets"), tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", run, "--steps", "1", *TINY, check=True)
    out = tmp_path / "generated"
    proc = royalty("generate", run, "--num", "1", "--out", out, "--steps", "2", "--device", "cuda")
    assert proc.returncode == 2, proc.stderr
    assert "--device cuda" in proc.stderr
    assert not out.exists()


def test_replaying_a_gpu_run_on_this_machine_says_which_device_it_needs(tmp_path) -> None:
    data, targets, run = make_data(tmp_path / "train"), make_targets(tmp_path / "targets"), tmp_path / "run"
    royalty("train", data, "--targets", targets, "--out", run, "--steps", "1", *TINY, check=True)
    manifest = json.loads((run / "run.json").read_text())
    manifest["config"]["device"] = "cuda"  # as a GPU machine would have recorded it
    (run / "run.json").write_text(json.dumps(manifest))
    proc = royalty("attribute", run, targets, "--mode", "replay", "--quiet")
    assert proc.returncode == 2, proc.stderr
    assert "trained with --device cuda" in proc.stderr
    assert not (run / "attributions").exists()
