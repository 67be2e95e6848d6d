"""The training trajectory: warm-up, then the valued steps.

`royalty train` runs it once; `royalty attribute --mode replay` runs it again with other
targets attached. Every random draw comes from (seed, purpose, step) and the engine's
training pass is plain training's backward, so both runs walk the same weights — which
the replay checks against the recorded weights hash before trusting its values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DModel

from royalty.attribution.config import TrainConfig
from royalty.attribution.diffusion import noise_prediction_losses
from royalty.attribution.draws import batch_indices, noise_draws
from royalty.attribution.engine import ValueEngine
from royalty.attribution.targets import TargetPlan, TargetRows
from royalty.errors import TrainingError

ProgressFn = Callable[[int, int, float], None]  # (steps done, total, train loss), warm-up included
StepHook = Callable[[int], None]  # called after step t's update with t + 1


@dataclass
class Tally:
    """The run's values so far: [n_train, n_columns] sums, and one log row per step."""

    first: torch.Tensor
    second: torch.Tensor
    log: list[dict[str, float]] = field(default_factory=list)

    @classmethod
    def zeros(cls, n_train: int, n_columns: int) -> "Tally":
        z = torch.zeros(n_train, n_columns, dtype=torch.float64)
        return cls(z, z.clone())

    def add(self, idx: torch.Tensor, columns: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> None:
        """Add one step's [B, S] values of batch rows `idx` into their value-target columns."""
        for total, part in ((self.first, first), (self.second, second)):
            block = torch.zeros(len(idx), total.shape[1], dtype=torch.float64)
            total.index_add_(0, idx, block.index_copy(1, columns, part.to(torch.float64)))


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 of every tensor of the state dict, by name: identical weights ⇔ identical hash."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().contiguous().cpu()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_finite(loss: float, where: str) -> None:
    # A diverged run would otherwise write NaN values that pay no one, or anyone.
    if not np.isfinite(loss):
        raise TrainingError(f"training diverged at {where} (loss {loss}): lower the learning rate; no values were written")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def plain_step(unet, scheduler, optimizer, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, where: str) -> float:
    """One step of plain training: what the engine's training pass must equal bit for bit."""
    optimizer.zero_grad(set_to_none=True)
    loss = noise_prediction_losses(unet, scheduler, x0, t, noise).mean()
    check_finite(float(loss.detach()), where)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def train_batch(cfg: TrainConfig, step: int, images: torch.Tensor, num_timesteps: int, phase: str = "train"):
    """(indices, x0, timesteps, noise) of a step's training batch, derived from the seed."""
    order = "order" if phase == "train" else "warmup-order"
    idx = batch_indices(cfg.seed, step, cfg.batch_size, images.shape[0], purpose=order)
    t, noise = noise_draws(cfg.seed, phase, step, len(idx), tuple(images.shape[1:]), num_timesteps)
    return idx, images[idx], t, noise


def warm_up(cfg: TrainConfig, unet, scheduler, optimizer, images: torch.Tensor, progress: ProgressFn | None, total: int) -> None:
    """Plain steps on the pooled training data, before any value is taken."""
    set_lr(optimizer, cfg.warmup_lr if cfg.warmup_lr is not None else cfg.lr)
    for w in range(cfg.warmup_steps):
        _, x0, t, noise = train_batch(cfg, w, images, scheduler.config.num_train_timesteps, phase="warmup")
        loss = plain_step(unet, scheduler, optimizer, x0, t, noise, f"warm-up step {w}")
        if progress is not None:
            progress(w + 1, total, loss)
    set_lr(optimizer, cfg.lr)


@dataclass(frozen=True)
class Valued:
    """What the valued steps need besides the model: targets, engine, Adam's P_t."""

    plan: TargetPlan
    engine: ValueEngine | None  # None: plain training (--no-values)
    precondition: Callable | None


def valued_steps(
    cfg: TrainConfig,
    unet: UNet2DModel,
    scheduler: DDPMScheduler,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    valued: Valued,
    tally: Tally,
    start: int,
    stop: int,
    after_step: StepHook | None = None,
) -> None:
    """Steps [start, stop) of the valued phase, values added into `tally`."""
    plan, engine = valued.plan, valued.engine
    for step in range(start, stop):
        idx, x0, t, noise = train_batch(cfg, step, images, scheduler.config.num_train_timesteps)
        optimizer.zero_grad(set_to_none=True)
        if engine is None:
            loss = plain_step(unet, scheduler, optimizer, x0, t, noise, f"step {step}")
            tally.log.append(log_row(step, cfg.lr, loss, float("nan"), float("nan"), float("nan")))
        else:
            rows = plan.rows(step)
            sv = engine.step(
                lambda: noise_prediction_losses(unet, scheduler, x0, t, noise),
                lambda sel: noise_prediction_losses(unet, scheduler, *rows.select(sel)),
                rows.slot,
                len(rows.columns),
                cfg.lr,
                valued.precondition,
            )
            check_finite(sv.train_loss, f"step {step}")
            if not bool(torch.isfinite(sv.total).all()):
                raise TrainingError(f"non-finite values at step {step}: lower --lr (now {cfg.lr})")
            optimizer.step()
            scale = rows.scale.unsqueeze(0)
            tally.add(idx, rows.columns, sv.first * scale, sv.second * scale)
            real = rows.columns < plan.n_targets
            before = float(sv.target_losses[real].mean())
            # exact draws are the same rows every step: the loss after step t is the loss
            # before step t+1, measured anyway; other estimators need one more forward
            if plan.estimator == "exact" and tally.log and step > 0:
                tally.log[-1]["target_loss_after"] = before
            last = step + 1 == stop
            after = target_loss_after(unet, scheduler, rows, real) if plan.estimator != "exact" or last else float("nan")
            value_sum = float(sv.total.sum(0)[real].mean())
            tally.log.append(log_row(step, cfg.lr, sv.train_loss, before, after, value_sum))
        if after_step is not None:
            after_step(step + 1)


@torch.no_grad()
def target_loss_after(unet, scheduler, rows: TargetRows, real: torch.Tensor) -> float:
    """Mean loss of the step's real targets at w_{t+1}, on the same draws."""
    losses = noise_prediction_losses(unet, scheduler, rows.images, rows.timesteps, rows.noise).to(torch.float64)
    n = len(rows.columns)
    per = torch.zeros(n, dtype=torch.float64).index_add(0, rows.slot, losses) / torch.bincount(rows.slot, minlength=n)
    return float(per[real].mean())


def log_row(step: int, lr: float, train_loss: float, before: float, after: float, value_sum: float) -> dict[str, float]:
    return {"step": step, "lr": lr, "train_loss": train_loss, "target_loss_before": before, "target_loss_after": after, "value_sum": value_sum}
