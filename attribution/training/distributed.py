"""Data parallelism under `torchrun` / `accelerate launch`: who this process is, and the
few collectives a data-parallel step needs.

A launcher tells each process its place through the environment (WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT); `launched()` reads it, joins the process group
and hands back a frozen `Dist`. Nothing is hung on modules: every collective takes the
`Dist` it works for, and a one-process run (no launcher, or WORLD_SIZE=1) never touches
torch.distributed at all, so it stays bit-identical to plain training.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from royalty.errors import UsageError

# How long a process waits for the others at one collective before failing. Long enough
# for rank 0 to write a large model; a crashed peer is normally noticed much sooner
# (the launcher stops the job, or the peer's socket closes).
TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; the default is a plain one-process run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """The process that writes files and prints progress and the summary."""
        return self.rank == 0


# Launchers that start processes without torch.distributed's variables: royalty would
# run alone in each of them, so they are refused rather than mistaken for one process.
_MPI_WORLD = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MV2_COMM_WORLD_SIZE")


def from_env(env: Mapping[str, str] = os.environ) -> Dist:
    """The Dist a launcher's environment describes (none: one process)."""
    if "WORLD_SIZE" not in env:
        _refuse_launch_without_world(env)
        return Dist()
    try:
        world = int(env["WORLD_SIZE"])
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as exc:
        raise UsageError(f"bad torch.distributed environment (WORLD_SIZE/RANK/LOCAL_RANK): {exc}") from exc
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"bad torch.distributed environment: RANK {rank} with WORLD_SIZE {world}")
    return Dist(rank=rank, world=world, local_rank=local_rank)


def _refuse_launch_without_world(env: Mapping[str, str]) -> None:
    mpi = [k for k in _MPI_WORLD if k in env]
    if mpi:
        raise UsageError(
            f"started by an MPI launcher ({mpi[0]} is set) without WORLD_SIZE/RANK: royalty joins "
            "torch.distributed's process group; launch it with torchrun or accelerate launch --multi_gpu"
        )
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_ADDR" in env:
        # `accelerate launch --cpu --num_processes N` starts ONE process and expects mpirun
        # to start the rest; running on would give a one-process run the user did not ask for
        raise UsageError(
            "accelerate launch --cpu with several processes starts only one (it expects mpirun to start "
            "the others): for N CPU processes use accelerate launch --multi_gpu --num_processes N "
            "(it uses CPUs where there is no GPU), or torchrun --nproc_per_node N"
        )


def backend_for(device: torch.device) -> str:
    # gloo reduces CPU tensors; NCCL is the one for CUDA tensors
    return "nccl" if device.type == "cuda" else "gloo"


@contextlib.contextmanager
def launched(device: torch.device = torch.device("cpu"), env: Mapping[str, str] = os.environ) -> Iterator[Dist]:
    """Join the launcher's process group for the duration of the block (if there is one)."""
    dist = from_env(env)
    if not dist.active:
        yield dist
        return
    if not torch_dist.is_available():
        raise UsageError("this torch build has no torch.distributed: run royalty on one process")
    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if k not in env]
    if missing:
        raise UsageError(
            f"WORLD_SIZE={dist.world} but {' and '.join(missing)} not set: start royalty with torchrun or accelerate launch"
        )
    torch_dist.init_process_group(backend_for(device), rank=dist.rank, world_size=dist.world, timeout=TIMEOUT)
    try:
        yield dist
        # Every process done with its collectives before any tears the group down: a gloo
        # process destroyed while a peer's last operation is in flight can abort (seen once
        # under a loaded CI machine, rank 1 killed by "terminate called without an active
        # exception"). Only on success: after an error the peers may never arrive.
        torch_dist.barrier()
    finally:
        torch_dist.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.active:
        torch_dist.barrier()


def shard_rows(dist: Dist, rows: int, what: str = "--batch-size") -> tuple[int, int]:
    """[start, stop) of this process's share of `rows` rows; they must split evenly."""
    if rows % dist.world:
        raise UsageError(
            f"{what} {rows} does not split evenly over {dist.world} processes: "
            f"use a multiple of {dist.world} (each process takes {what} / processes rows)"
        )
    share = rows // dist.world
    return dist.rank * share, (dist.rank + 1) * share


def shard_range(dist: Dist, n: int) -> tuple[int, int]:
    """[start, stop) of this process's share of `n` items, as even as possible (sizes differ by ≤ 1)."""
    return dist.rank * n // dist.world, (dist.rank + 1) * n // dist.world


def gather_shards(dist: Dist, local: torch.Tensor, n: int) -> torch.Tensor:
    """Every process's `shard_range` share of `n` rows (`local`), in row order, on every process.

    Shards differ in length by at most one row: each is padded to the longest for the
    collective (which wants equal shapes) and cut back after it.
    """
    if not dist.active:
        return local
    longest = -(-n // dist.world)
    padded = local.new_zeros((longest, *local.shape[1:]))
    padded[: local.shape[0]] = local
    parts = gather_rows(dist, padded)
    sizes = [shard_range(Dist(rank, dist.world), n) for rank in range(dist.world)]
    return torch.cat([part[: stop - start] for part, (start, stop) in zip(parts, sizes)])


def reduce_gradients(dist: Dist, params: Sequence[torch.nn.Parameter], micro_batches: int) -> None:
    """`.grad` ← the mean over every process and micro-batch of their mean-loss gradients.

    All shards hold the same number of rows, so that mean is the gradient of the step's
    whole batch: one process with the global batch, up to float summation order. One flat
    all-reduce rather than one per parameter: fewer round trips.
    """
    if micro_batches == 1 and not dist.active:
        return
    for p in params:
        if p.grad is None:  # a parameter this shard did not reach: it contributes zero
            p.grad = torch.zeros_like(p)
    if dist.active:
        flat = torch.cat([p.grad.reshape(-1) for p in params])
        torch_dist.all_reduce(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n
    scale = 1.0 / (micro_batches * dist.world)
    for p in params:
        p.grad.mul_(scale)


def gather_rows(dist: Dist, local: torch.Tensor) -> list[torch.Tensor]:
    """Every process's `local` (same shape everywhere), by rank, on every process."""
    if not dist.active:
        return [local]
    parts = [torch.empty_like(local) for _ in range(dist.world)]
    torch_dist.all_gather(parts, local.contiguous())
    return parts


def same_everywhere(dist: Dist, value: str) -> bool:
    """Whether every process holds the same string (e.g. its weights hash)."""
    if not dist.active:
        return True
    values: list[str | None] = [None] * dist.world
    torch_dist.all_gather_object(values, value)
    return all(v == value for v in values)
