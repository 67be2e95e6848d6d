"""The target-side estimators: which rows each step evaluates, and with what weight."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from royalty.attribution.training.config import TrainConfig
from royalty.attribution.training.draws import batch_indices
from royalty.attribution.model.task import Inputs
from royalty.attribution.training.targets import TargetPlan
from royalty.attribution.training.trajectory import train_batch


def plan(estimator: str, subset: int = 0, reference: bool = False) -> TargetPlan:
    groups = tuple(Inputs(torch.full((1, 3, 4, 4), float(i))) for i in range(5))
    if reference:
        groups += (Inputs(torch.zeros(3, 3, 4, 4)),)  # a reference set of three images
    return TargetPlan(groups, 5, 2, 250, estimator, subset, seed=0)


def test_exact_reuses_the_same_draws_every_step() -> None:
    p = plan("exact", reference=True)
    a, b = p.rows(0), p.rows(7)
    assert torch.equal(a.noise, b.noise) and torch.equal(a.timesteps, b.timesteps)
    assert len(a.slot) == 5 * 2 + 3 * 2  # M=2 draws per image, reference images included
    assert (a.timesteps < 250).all()
    assert a.columns.tolist() == [0, 1, 2, 3, 4, 5] and (a.scale == 1).all()


def test_fresh_draws_once_per_image_per_step() -> None:
    p = plan("fresh")
    a, b = p.rows(0), p.rows(1)
    assert len(a.slot) == 5
    assert not torch.equal(a.noise, b.noise)
    assert torch.equal(p.rows(1).noise, b.noise)  # a function of the step: resumable


def test_subset_is_unbiased_over_steps() -> None:
    """Each target is picked with probability S/K and weighted K/S: expected weight 1."""
    p = plan("subset", subset=2, reference=True)
    weight = torch.zeros(6, dtype=torch.float64)
    steps = 4000
    for step in range(steps):
        rows = p.rows(step)
        assert len(rows.columns) == 3 and rows.columns[-1] == 5  # the reference every step
        weight.index_add_(0, rows.columns, rows.scale)
    weight /= steps
    assert torch.allclose(weight[:5], torch.ones(5, dtype=torch.float64), atol=0.08)
    assert weight[5] == 1


def test_rotation_values_every_target_once_a_round() -> None:
    """K=5, S=2: rounds of 3 steps with shares of 2, 2 and 1 targets, weighted K/share."""
    p = plan("rotation", subset=2, reference=True)
    assert p.per_step == 3
    orders = []
    for rnd in range(4):
        steps = [p.rows(3 * rnd + j) for j in range(3)]
        picked = [rows.columns[:-1].tolist() for rows in steps]
        assert [len(c) for c in picked] == [2, 2, 1]
        assert sorted(sum(picked, [])) == [0, 1, 2, 3, 4]  # each target once, none twice
        for rows, cols in zip(steps, picked):
            assert rows.columns[-1] == 5 and rows.scale[-1] == 1  # the reference every step
            assert torch.equal(rows.scale[:-1], torch.full((len(cols),), 5 / len(cols), dtype=torch.float64))
            assert cols == sorted(cols)
        orders.append(picked)
    assert len({str(o) for o in orders}) > 1  # a new order each round
    again = plan("rotation", subset=2, reference=True).rows(4)  # a function of (seed, step): resumable
    assert again.columns.tolist() == orders[1][1] + [5] and torch.equal(again.noise, p.rows(4).noise)


def test_rotation_is_unbiased_over_rounds() -> None:
    """Whichever share of its round a target falls in, its expected weight per step is 1."""
    p = plan("rotation", subset=2)
    weight = torch.zeros(5, dtype=torch.float64)
    steps = 3 * 1500
    for step in range(steps):
        rows = p.rows(step)
        weight.index_add_(0, rows.columns, rows.scale)
    weight /= steps
    assert torch.allclose(weight, torch.ones(5, dtype=torch.float64), atol=0.08)


def test_rotation_and_subset_of_every_target_are_exact() -> None:
    exact = plan("exact").rows(3)
    for estimator in ("subset", "rotation"):
        rows = plan(estimator, subset=5).rows(3)
        assert torch.equal(rows.noise, exact.noise) and torch.equal(rows.columns, exact.columns) and (rows.scale == 1).all()


def test_batches_walk_through_epoch_permutations() -> None:
    seen = torch.cat([batch_indices(3, s, 4, 10) for s in range(5)])  # 20 = two epochs
    assert sorted(seen[:10].tolist()) == list(range(10))
    assert sorted(seen[10:].tolist()) == list(range(10))
    assert torch.equal(batch_indices(3, 2, 4, 10), seen[8:12])  # crossing the epoch boundary


def test_train_max_timestep_bounds_the_valued_steps_only() -> None:
    images = Inputs(torch.zeros(40, 3, 4, 4))
    base = TrainConfig(data=Path("d"), targets=Path("t"), out=Path("o"), batch_size=32)
    low = dataclasses.replace(base, train_max_timestep=10)
    for step in range(3):
        idx, rows = train_batch(low, step, images, 1000)
        idx0, rows0 = train_batch(base, step, images, 1000)
        assert (rows.timesteps < 10).all() and rows0.timesteps.max() >= 10  # the whole range, unless asked
        assert torch.equal(idx, idx0) and torch.equal(rows.noise, rows0.noise)  # only the timesteps change
        _, warm = train_batch(low, step, images, 1000, phase="warmup")
        _, warm0 = train_batch(base, step, images, 1000, phase="warmup")
        assert torch.equal(warm.timesteps, warm0.timesteps)  # the warm-up always draws from the whole range
    assert low.recipe_hash() != base.recipe_hash()
    # added later: a run.json written before it existed loads, and keeps its recipe hash
    old = base.to_json()
    del old["train_max_timestep"]
    assert TrainConfig.from_json(old).recipe_hash() == base.recipe_hash()
