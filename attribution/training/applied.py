"""A valued step that credits the update the optimizer applies (docs/design.md §1.6).

The engine's passes give every training row's gradient and every target's; the credit
window (attribution/engine/window.py) keeps the batches whose gradients are still in
AdamW's momentum and splits the step's update over them. The rows credited at step t
belong to earlier steps' batches: they are added into the tally under their own rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from royalty.attribution.engine.collect import TargetVectors, collect, target_vectors
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import ValueEngine
from royalty.attribution.engine.window import AppliedUpdate, CreditWindow, Slot, TargetStep, Unattributed, accumulates, window_length
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.training.optim import AdamStep, adamw_step, first_moment


def flat(tensors: Mapping[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].reshape(-1) for n in names])


def new_window(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, params: Mapping[str, nn.Parameter], columns: int = 0, per_step: int = 0
) -> CreditWindow:
    """The window at the start of the valued phase: AdamW's momentum so far is carried in.
    `columns`: the run's value columns, `per_step`: how many a step evaluates (they choose
    the cheaper scheme, engine/window.py)."""
    names = list(params)
    if cfg.optimizer == "adamw":
        beta1 = float(optimizer.param_groups[0]["betas"][0])
        m0, n0 = first_moment(optimizer, params)
        carried = flat(m0, names)
    else:  # SGD with weight decay: no momentum, each batch applied once, at its own step
        beta1, n0 = 0.0, 0
        carried = torch.zeros(sum(p.numel() for p in params.values()), dtype=torch.float64, device=next(iter(params.values())).device)
    length = cfg.credit_window if cfg.credit_window is not None else window_length(beta1)
    return CreditWindow(beta1, length, carried, n0, columns, accumulates(beta1, length, columns, per_step))


def sgd_step(cfg: TrainConfig, params: Mapping[str, nn.Parameter], count: int) -> AdamStep:
    """SGD with weight decay as an applied update: P = 1, Δw = −η (g + λ w)."""
    precond = {n: torch.ones_like(p, dtype=torch.float64) for n, p in params.items()}
    update = {n: -cfg.lr * (p.grad.to(torch.float64) + cfg.weight_decay * p.detach().to(torch.float64)) for n, p in params.items()}
    return AdamStep(cfg.lr, cfg.weight_decay, 0.0, count, precond, update)


@dataclass(frozen=True)
class AppliedOutcome:
    train_loss: float  # the mean training loss of this call's last micro-batch (as the engine reports it)
    row_losses: torch.Tensor  # [B_local] this process's rows' losses
    target_losses: torch.Tensor  # [K] at w_t, on the CPU
    # per credited batch: (its training-row indices, value columns [S], first [B, S], second
    # [B, S]), target weights applied, every process's rows in step order, on the CPU
    credits: tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], ...]
    credited: torch.Tensor  # [K]: what this step's update owes the valued rows (all processes), first and second order
    unattributed: Unattributed  # [K] each part, on the CPU
    after: TargetVectors | None = None  # the secant curvature's targets at w_{t+1} (None: not taken)


@dataclass(frozen=True)
class StepBatch:
    """What one valued step computes on: its batch and targets, and how processes join in."""

    step: int
    rows: torch.Tensor  # the step's training-row indices (all processes, in step order)
    losses: Callable | list[Callable]  # the engine's training loss function(s)
    targets: TargetSide
    columns: torch.Tensor  # [K] each target's value column
    scale: torch.Tensor  # [K] float64: its values' weight in the run's sums
    final: bool  # the run's last step: every open batch is credited in full
    finish_grads: Callable[[], None] | None = None  # accumulation scaling, the all-reduce
    in_step_order: Callable[[torch.Tensor], torch.Tensor] = lambda local: local  # every process's rows
    summed: Callable[[torch.Tensor], torch.Tensor] = lambda local: local  # Σ over processes, the same everywhere
    at_weights: TargetVectors | None = None  # these targets at w_t, if the previous step's secant pass took them


def applied_step(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer, engine: ValueEngine, window: CreditWindow, batch: StepBatch
) -> AppliedOutcome:
    """Backward, apply the update (`optimizer.step()`) and credit it.

    The second-order term needs H_k Δw_t: with `cfg.curvature` "hessian" from one
    Hessian-vector product per target before the step; with "secant" from the targets'
    gradients once more, after it: ∇ℓ_k(w_{t+1}) − ∇ℓ_k(w_t).
    """
    step, idx, losses, in_step_order = batch.step, batch.rows, batch.losses, batch.in_step_order
    params = engine.params
    names = list(params)
    terms: list[AdamStep] = []

    def predicted() -> AdamStep:  # once the gradients are final (after finish_grads)
        if not terms:
            terms.append(adamw_step(optimizer, params) if cfg.optimizer == "adamw" else sgd_step(cfg, params, step + 1))
        return terms[0]

    def direction() -> dict[str, torch.Tensor]:
        return {n: d.to(params[n].dtype) for n, d in predicted().update.items()}

    secant = engine.config.order == 2 and cfg.curvature == "secant"
    hvps = engine.config.order == 2 and not secant
    got = collect(engine, losses, batch.targets, direction if hvps else None, batch.finish_grads, batch.at_weights)
    now = predicted()
    # Σ over every process's rows of ∇ℓ(z): the all-reduced mean gradient × the step's rows
    grad_sum = flat({n: p.grad for n, p in params.items()}, names).to(torch.float64) * len(idx)
    window.open(Slot(step, now.count, idx.cpu(), len(idx), got.per_sample.detach(), grad_sum))
    weights = flat({n: p.detach() for n, p in params.items()}, names).to(torch.float64)
    applied = AppliedUpdate(now.lr, now.weight_decay, now.beta1, now.count, flat(now.precond, names), weights, flat(now.update, names))
    optimizer.step()
    after, curvature = None, got.target_hvps
    if secant:
        after = target_vectors(engine, batch.targets)
        curvature = after.grads.to(torch.float64) - got.target_grads.to(torch.float64)
    credit = window.credit(applied, TargetStep(got.target_grads, curvature, batch.columns, batch.scale), batch.final)
    credits = tuple((c.rows, c.columns, in_step_order(c.first).cpu(), in_step_order(c.second).cpu()) for c in credit.slots)
    un = credit.unattributed
    return AppliedOutcome(
        got.train_loss, got.row_losses, got.target_losses.cpu(), credits, batch.summed(credit.credited).cpu(),
        Unattributed(un.decay.cpu(), un.carried.cpu(), un.beyond.cpu()), after,
    )
