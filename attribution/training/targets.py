"""The target side of each step: which (image, timestep, noise) rows it evaluates.

A *value target* is what a column of values is about: each target image, plus the
reference set R when the run has one (one more target whose loss is the mean over its
images, docs/design.md §1.7). Four estimators:

- exact: M fixed draws per image, chosen once from the seed and reused every step
  (common random numbers), so ℓ_T(w) is a deterministic function of w;
- fresh: one new draw per image per step — unbiased for the values averaged over draws;
- subset: the exact draws of a random subset of S targets per step, values scaled K/S —
  unbiased for the run's summed values; R (if any) is evaluated every step;
- rotation: as subset, but each round of ⌈K/S⌉ steps takes the targets in one random
  order, S per step, so every target is valued once a round (the count of steps a target
  is valued in, which varies under subset, no longer adds variance).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from royalty.attribution.model.task import Inputs, Rows
from royalty.attribution.training.config import SHARE_ESTIMATORS
from royalty.attribution.training.draws import generator, noise_draws


@dataclass(frozen=True)
class TargetRows:
    images: Inputs  # [T] rows: each target image's model inputs, once per draw
    timesteps: torch.Tensor  # [T]
    noise: torch.Tensor  # [T, ...] shaped like images.x
    slot: torch.Tensor  # [T]: which slot (engine column) each row belongs to
    columns: torch.Tensor  # [S]: the value-target column of each slot
    scale: torch.Tensor  # [S]: weight of the slot's values in the run's sums

    def to(self, device: torch.device) -> "TargetRows":
        """The rows on `device` (draws are made on the CPU); the per-slot columns stay with the tally, on the CPU."""
        return TargetRows(
            self.images.to(device), self.timesteps.to(device), self.noise.to(device), self.slot.to(device),
            self.columns, self.scale,
        )

    def shard(self, start: int, stop: int) -> "TargetRows":
        """The rows of slots [start, stop), renumbered from 0: one process's share of the targets."""
        keep = (self.slot >= start) & (self.slot < stop)
        return TargetRows(
            self.images[keep.to(self.images.device)], self.timesteps[keep], self.noise[keep], self.slot[keep] - start,
            self.columns[start:stop], self.scale[start:stop],
        )

    def select(self, rows: torch.Tensor | None) -> Rows:
        """The given rows (None: all) as a task's `Rows`."""
        if rows is None:
            return Rows(self.images, self.timesteps, self.noise)
        return Rows(self.images[rows], self.timesteps[rows], self.noise[rows])


@dataclass(frozen=True)
class TargetPlan:
    groups: tuple[Inputs, ...]  # per value target: its images' model inputs (n_v rows)
    n_targets: int  # K real targets (columns 0..K-1); a reference, if any, is column K
    draws: int
    max_timestep: int
    estimator: str
    subset: int
    seed: int

    @property
    def n_columns(self) -> int:
        return len(self.groups)

    @property
    def shares(self) -> bool:
        """Whether a step evaluates a share of the targets (S < K), not all of them."""
        return self.estimator in SHARE_ESTIMATORS and self.subset < self.n_targets

    @property
    def per_step(self) -> int:
        """Columns a step evaluates (at most: a rotation round's last share can be smaller)."""
        return self.subset + self.n_columns - self.n_targets if self.shares else self.n_columns

    def rows(self, step: int) -> TargetRows:
        if self.estimator == "fresh":
            return self._rows(range(self.n_columns), draws=1, purpose="target-fresh", index=step, scale=1.0)
        if self.shares:
            # each target is picked with probability |pick|/K at this step (a rotation
            # round's last share can be smaller than S): scaled K/|pick|, unbiased
            pick = self._pick(step)
            chosen = sorted(int(i) for i in pick) + list(range(self.n_targets, self.n_columns))
            return self._rows(chosen, self.draws, "target-draws", 0, self.n_targets / len(pick))
        return self._rows(range(self.n_columns), self.draws, "target-draws", 0, 1.0)

    def _pick(self, step: int) -> torch.Tensor:
        """The targets of this step's share."""
        if self.estimator == "subset":
            return torch.randperm(self.n_targets, generator=generator(self.seed, "target-subset", step))[: self.subset]
        # rotation: round r (⌈K/S⌉ steps) walks one random order of the targets, S per
        # step: a target's share is a uniformly random step of each round, never two or none
        per_round = -(-self.n_targets // self.subset)
        rnd, pos = divmod(step, per_round)
        order = torch.randperm(self.n_targets, generator=generator(self.seed, "target-rotation", rnd))
        return order[pos * self.subset : (pos + 1) * self.subset]

    def _rows(self, columns, draws: int, purpose: str, index: int, scale: float) -> TargetRows:
        images, slots, ts, noises, cols, scales = [], [], [], [], [], []
        for slot, col in enumerate(columns):
            group = self.groups[col]
            n = len(group) * draws
            # each column's draws depend only on (column, step): a subset sees the same rows
            t, noise = noise_draws(self.seed, f"{purpose}:{col}", index, n, group.sample_shape, self.max_timestep)
            images.append(group.repeat_interleave(draws))
            ts.append(t)
            noises.append(noise)
            slots.append(torch.full((n,), slot, dtype=torch.long))
            cols.append(col)
            scales.append(scale if col < self.n_targets else 1.0)
        return TargetRows(
            Inputs.cat(images),
            torch.cat(ts),
            torch.cat(noises),
            torch.cat(slots),
            torch.tensor(cols, dtype=torch.long),
            torch.tensor(scales, dtype=torch.float64),
        )


def column_means(losses: torch.Tensor, rows: TargetRows) -> torch.Tensor:
    """Each value column's mean of its rows' losses ([n_columns], on the losses' device)."""
    n = len(rows.columns)
    per = torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add(0, rows.slot, losses)
    return per / torch.bincount(rows.slot, minlength=n)
