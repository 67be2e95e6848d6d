"""The retraining game's one expensive operation: train the valued phase on some owners.

Base state: the run's model after its warm-up, with the optimizer state the warm-up left
(rebuilt with `initial_model` + `warm_up`, exactly as the run started its valued phase).
A retraining on owner set T: from the base state, the run's valued phase — same steps,
optimizer, learning rate and batch size — as plain training on T's images only; then the
loss of every value target on the run's own fixed draws (`TargetPlan.rows(0)`, exact).

Two games (`--game`):
- `subset`: the valued phase as plain training on T's images only — every batch is
  drawn from T, so a lone owner sees its images as often as the whole catalogue was seen;
- `batch-mask`: the run's own batches and draws, with the rows of owners outside T
  dropped from each step's loss (the sum over T's rows, still divided by the batch
  size): the counterfactual the in-run values take at each step, followed through the
  whole trajectory instead of to first order at w_t.

Retraining seed s changes only the valued phase's batch order and training noise
(`seed + SEED_STRIDE·s`); the base model and the target draws stay the run's, so the
spread between seeds is the noise of training itself, not of the yardstick. Seed 0 is the
run's own draws: trained on every owner, it walks the run's trajectory bit for bit.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from royalty.attribution.audit.state import GAMES, CoalitionStore, Retraining
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.data.folders import ImageTable
from royalty.attribution.model.task import Task
from royalty.attribution.training.optim import optimization
from royalty.attribution.training.targets import TargetPlan, TargetRows, column_means
from royalty.attribution.training.device import module_device
from royalty.attribution.engine.gradient import TrainPass
from royalty.attribution.training.trainer import engine_config, initial_model, target_groups
from royalty.attribution.training.trajectory import (
    Parallel, Tally, Valued, check_finite, set_lr, train_batch, valued_steps, warm_up, weights_sha256,
)

SEED_STRIDE = 1000  # retraining seed s draws batches and noise from config.seed + 1000·s

PhaseFn = Callable[[str, int], None]  # (label, steps) when a warm-up or retraining starts
StepFn = Callable[[int], None]  # steps done in the current phase


@dataclass(frozen=True)
class Phases:
    on_phase: PhaseFn | None = None
    on_step: StepFn | None = None

    def start(self, label: str, steps: int) -> None:
        if self.on_phase is not None:
            self.on_phase(label, steps)

    def step(self, done: int) -> None:
        if self.on_step is not None:
            self.on_step(done)


def target_plan(config: TrainConfig, task: Task, targets: ImageTable, reference: ImageTable | None) -> TargetPlan:
    """The run's value targets and their fixed draws (what the trainer builds), always exact."""
    groups = target_groups(task, targets, reference)
    return TargetPlan(groups, len(targets), config.timestep_draws, config.target_max_timestep, "exact", 0, config.seed)


@torch.no_grad()
def column_losses(task: Task, rows: TargetRows) -> np.ndarray:
    """ℓ_T per value target: the mean loss over its fixed draws (float64)."""
    return column_means(task.losses(rows.select(None)).to(torch.float64), rows).cpu().numpy()


class Retrainer:
    def __init__(
        self, config: TrainConfig, train: ImageTable, plan_for: Callable[[Task], TargetPlan], total_steps: int,
        store: CoalitionStore, phases: Phases = Phases(), game: str = "subset",
    ) -> None:
        """`plan_for(task)`: the run's value targets as the rebuilt task's inputs."""
        if game not in GAMES:
            raise ValueError(f"unknown retraining game {game!r}")
        self.config, self.train, self.total_steps, self.game = config, train, total_steps, game
        # the run's micro-batches and precision, in one process: the run's own arithmetic
        # (a run trained on several processes summed its gradients in another order)
        self.parallel = Parallel.of(config)
        self.phases = phases
        self.task, _ = initial_model(config)
        self.unet = self.task.model
        self.unet.train()
        # every retraining step runs the run's training pass: `.grad` the same reduction
        self.passes = TrainPass(self.unet, engine_config(config))
        device = module_device(self.unet)
        self.plan = plan_for(self.task)
        self.rows = self.plan.rows(0).to(device)
        self.images = self.task.inputs(train)  # on the model's device
        self.base_seconds = 0.0
        state = store.load_base()
        if state is None:
            started = time.monotonic()
            state = self._warm_up()
            store.save_base(state)
            self.base_seconds = time.monotonic() - started
        self.base_model, self.base_optimizer = state["model"], state["optimizer"]
        self.unet.load_state_dict(self.base_model)
        self.base_losses = column_losses(self.task, self.rows)

    def _warm_up(self) -> dict:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        optimizer = optimization(cfg, self.unet).optimizer
        self.phases.start("warm-up", cfg.warmup_steps)
        warm_up(cfg, self.task, optimizer, self.images,
                lambda done, _total, _loss: self.phases.step(done), cfg.warmup_steps, self.passes, self.parallel)
        return {"model": copy.deepcopy(self.unet.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}

    def retrain(self, owners: frozenset[str], seed_index: int, label: str) -> Retraining:
        """Train the valued phase on `owners`' images (as the game says), from the base state."""
        started = time.monotonic()
        cfg = dataclasses.replace(self.config, seed=self.config.seed + SEED_STRIDE * seed_index)
        keep = [i for i, owner in enumerate(self.train.owners) if owner in owners]
        if not keep:
            raise ValueError("a retraining needs at least one owner's images")
        self.unet.load_state_dict(self.base_model)
        optimizer = optimization(cfg, self.unet).optimizer
        optimizer.load_state_dict(copy.deepcopy(self.base_optimizer))
        torch.manual_seed(cfg.seed)
        self.phases.start(label, self.total_steps)
        if self.game == "subset" or len(keep) == len(self.train):
            # everyone present: both games are the run's plain training (bit for bit at seed 0)
            images = self.images[torch.tensor(keep, dtype=torch.long, device=self.images.device)]
            valued_steps(
                cfg, self.task, optimizer, Valued(images, self.plan, self.passes, None, None, self.parallel),
                Tally.zeros(len(keep), self.plan.n_columns), range(self.total_steps), self.phases.step,
            )
        else:
            present = torch.zeros(len(self.train), dtype=torch.bool)
            present[torch.tensor(keep, dtype=torch.long)] = True
            self._masked_steps(cfg, optimizer, present)
        losses = column_losses(self.task, self.rows)
        return Retraining(owners, seed_index, tuple(float(x) for x in losses), time.monotonic() - started,
                          weights_sha256(self.unet))

    def _masked_steps(self, cfg: TrainConfig, optimizer: torch.optim.Optimizer, present: torch.Tensor) -> None:
        """The run's batches with absent owners' rows dropped: gradient Σ_{rows in T} ∇ℓ / B."""
        set_lr(optimizer, cfg.lr)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        for step in range(self.total_steps):
            idx, batch = train_batch(cfg, step, self.images, self.task.num_train_timesteps)
            rows = present[idx].to(batch.inputs.device)
            optimizer.zero_grad(set_to_none=False)
            for p in params:  # a step with none of T's rows still steps, with a zero gradient
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            if bool(rows.any()):
                present_rows, scale = batch[rows], float(rows.sum()) / len(idx)

                def losses() -> torch.Tensor:
                    # the training pass takes the mean: of these, Σ_{rows in T} ℓ / B
                    with self.parallel.autocast(batch.inputs.device):  # micro-batches would only change the summation order
                        return self.task.losses(present_rows) * scale

                _, _, loss = self.passes.run([losses], keep=False)
                check_finite(loss, f"masked retraining step {step}")
            optimizer.step()
            self.phases.step(step + 1)
