"""What royalty reads from a launcher's environment (torchrun, accelerate, MPI).

The real launches are in test_distributed and test_distributed_launch; these are the
branches a launch on this machine cannot reach (MPI, a half-set environment) and the
precision table.
"""

from __future__ import annotations

import pytest

from royalty.attribution.training.config import mixed_precision_of
from royalty.attribution.training.distributed import Dist, from_env, shard_range
from royalty.errors import UsageError


def test_no_launcher_is_one_process() -> None:
    assert from_env({}) == Dist()


def test_torchrun_environment() -> None:
    env = {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert from_env(env) == Dist(rank=3, world=4, local_rank=1)


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2", "RANK": "2"}, {"WORLD_SIZE": "x"}, {"WORLD_SIZE": "0"}])
def test_bad_torchrun_environment(env) -> None:
    with pytest.raises(UsageError, match="bad torch.distributed environment"):
        from_env(env)


@pytest.mark.parametrize("variable", ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE"])
def test_mpi_launch_without_torch_variables_is_refused(variable) -> None:
    with pytest.raises(UsageError, match=f"MPI launcher \\({variable} is set\\)"):
        from_env({variable: "2"})


def test_accelerate_cpu_single_process_with_a_rendezvous_is_refused() -> None:
    with pytest.raises(UsageError, match="starts only one"):
        from_env({"ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"})
    # one process under accelerate --cpu sets no rendezvous: an ordinary one-process run
    assert from_env({"ACCELERATE_USE_CPU": "True"}) == Dist()


@pytest.mark.parametrize(
    ("option", "launcher", "expected"),
    [
        (None, None, "no"),
        ("bf16", None, "bf16"),
        (None, "no", "no"),
        ("bf16", "no", "bf16"),  # accelerate's "no" is also its default: the option decides
        (None, "bf16", "bf16"),
        ("bf16", "BF16", "bf16"),
    ],
)
def test_mixed_precision_from_option_or_accelerate(option, launcher, expected) -> None:
    env = {} if launcher is None else {"ACCELERATE_MIXED_PRECISION": launcher}
    assert mixed_precision_of(option, env) == expected


@pytest.mark.parametrize(
    ("option", "launcher", "message"),
    [("no", "bf16", "--mixed-precision no but accelerate"), (None, "fp16", "royalty trains in no or bf16"),
     (None, "fp8", "royalty trains in no or bf16")],
)
def test_mixed_precision_conflicts_and_unsupported(option, launcher, message) -> None:
    with pytest.raises(UsageError, match=message):
        mixed_precision_of(option, {"ACCELERATE_MIXED_PRECISION": launcher})


@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 24])
def test_target_shares_cover_every_target_once_and_differ_by_at_most_one(world, n) -> None:
    shares = [shard_range(Dist(rank, world), n) for rank in range(world)]
    assert [i for start, stop in shares for i in range(start, stop)] == list(range(n))
    sizes = [stop - start for start, stop in shares]
    assert max(sizes) - min(sizes) <= 1
