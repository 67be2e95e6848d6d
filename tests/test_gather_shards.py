"""`gather_shards` in a real two-process gloo group: unequal shares come back whole and in order."""

from __future__ import annotations

import os

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp

from royalty.attribution.training.distributed import Dist, gather_shards, shard_range


def _worker(rank: int, world: int, store: str, sizes: tuple[int, ...], out: dict) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    torch_dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        dist = Dist(rank, world)
        for n in sizes:  # one group, every size: starting processes costs more than the gathers
            start, stop = shard_range(dist, n)
            # row i of the whole is (i, i²) as float64: a share holds exactly its rows
            whole = torch.stack([torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64) ** 2], 1)
            out[(n, rank)] = gather_shards(dist, whole[start:stop].clone(), n)
    finally:
        torch_dist.destroy_process_group()


def test_uneven_shares_are_gathered_in_order(tmp_path) -> None:
    sizes = (3, 4, 5)
    manager = mp.get_context("spawn").Manager()
    try:
        out = manager.dict()
        mp.start_processes(_worker, args=(2, str(tmp_path / "store"), sizes, out), nprocs=2, start_method="spawn")
        for n in sizes:
            want = torch.stack([torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64) ** 2], 1)
            for rank in range(2):
                assert torch.equal(out[(n, rank)], want), (n, rank)
    finally:
        manager.shutdown()


def test_one_process_gathers_nothing() -> None:
    local = torch.arange(6.0).reshape(3, 2)
    assert gather_shards(Dist(), local, 3) is local
