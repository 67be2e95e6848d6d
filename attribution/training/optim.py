"""Optimizers the trainer offers, and Adam's preconditioner for the values (docs/design.md §1.5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from royalty.attribution.training.config import TrainConfig
from royalty.errors import UsageError

OptimizerName = Literal["sgd", "adamw"]


def make_optimizer(name: str, params: list[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Optimizer:
    # foreach=False: the same per-parameter kernels every run, so CPU results are reproducible
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, foreach=False)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=False)
    raise UsageError(f"unknown optimizer {name!r}: choose sgd or adamw")


def adamw_preconditioner(
    optimizer: torch.optim.AdamW, params: Mapping[str, nn.Parameter]
) -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """P_t = 1 / (√v̂_t + ε) with the v̂_t the coming `optimizer.step()` will use.

    Called after backward, before the step: v̂_t already includes this step's gradient.
    """

    def precondition(grads: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for group in optimizer.param_groups:
            if group.get("amsgrad"):
                raise UsageError("AdamW with amsgrad is not supported by the value engine")
            beta2, eps = group["betas"][1], group["eps"]
            ids = {id(p) for p in group["params"]}
            for name, p in params.items():
                if id(p) not in ids:
                    continue
                state = optimizer.state.get(p, {})
                step = float(state["step"]) + 1 if "step" in state else 1.0
                g = grads[name]
                v_prev = state.get("exp_avg_sq", torch.zeros_like(g))
                v = v_prev * beta2 + (1 - beta2) * g * g
                v_hat = v / (1 - beta2**step)
                out[name] = 1.0 / (v_hat.sqrt() + eps)
        return out

    return precondition


Precondition = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class AdamStep:
    """The AdamW step `optimizer.step()` is about to take, per parameter, in float64."""

    lr: float
    weight_decay: float
    beta1: float
    count: int  # the optimizer's step count once this step is taken
    precond: dict[str, torch.Tensor]  # P_t = 1 / (√v̂_t + ε)
    update: dict[str, torch.Tensor]  # Δw_t = −η (λ w_t + P_t m̂_t)


def adamw_step(optimizer: torch.optim.AdamW, params: Mapping[str, nn.Parameter]) -> AdamStep:
    """What the coming `optimizer.step()` will do, from its state and the gradients in `.grad`.

    Mirrors torch's AdamW (decoupled decay, bias-corrected moments, ε outside the root);
    tests/test_adam_credit.py checks the predicted Δw_t against the step torch takes.
    """
    if len(optimizer.param_groups) != 1:
        raise UsageError("the applied-update credit needs one AdamW parameter group")
    group = optimizer.param_groups[0]
    if group.get("amsgrad") or group.get("maximize"):
        raise UsageError("AdamW with amsgrad or maximize is not supported by the value engine")
    lr, wd, (beta1, beta2), eps = float(group["lr"]), float(group["weight_decay"]), group["betas"], group["eps"]
    precond, update, counts = {}, {}, set()
    for name, p in params.items():
        state = optimizer.state.get(p, {})
        count = int(state["step"]) + 1 if "step" in state else 1
        counts.add(count)
        g = p.grad.to(torch.float64)
        m = state["exp_avg"].to(torch.float64) * beta1 + (1 - beta1) * g if "exp_avg" in state else (1 - beta1) * g
        v = state["exp_avg_sq"].to(torch.float64) * beta2 + (1 - beta2) * g * g if "exp_avg_sq" in state else (1 - beta2) * g * g
        pre = 1.0 / ((v / (1 - beta2**count)).sqrt() + eps)
        precond[name] = pre
        update[name] = -lr * (wd * p.detach().to(torch.float64) + pre * m / (1 - beta1**count))
    if len(counts) != 1:
        raise UsageError("AdamW parameters at different step counts: the applied-update credit needs one count")
    return AdamStep(lr, wd, float(beta1), counts.pop(), precond, update)


def first_moment(optimizer: torch.optim.AdamW, params: Mapping[str, nn.Parameter]) -> tuple[dict[str, torch.Tensor], int]:
    """The first moment m and step count the optimizer holds now (zeros and 0 before its first step)."""
    m, count = {}, 0
    for name, p in params.items():
        state = optimizer.state.get(p, {})
        m[name] = state["exp_avg"].to(torch.float64, copy=True) if "exp_avg" in state else torch.zeros_like(p, dtype=torch.float64)
        count = int(state["step"]) if "step" in state else 0
    return m, count


@dataclass(frozen=True)
class Optimization:
    """The run's optimizer over the model's trainable parameters, and Adam's P_t for the values."""

    optimizer: torch.optim.Optimizer
    precondition: Precondition | None  # None: SGD, whose update is the gradient itself


def optimization(cfg: TrainConfig, model: nn.Module) -> Optimization:
    """What train, replay, the checkpoints mode and the audit's retrainings all step with.

    Parameters in the model's order: a checkpoint's optimizer state is matched to them by position.
    """
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    optimizer = make_optimizer(cfg.optimizer, list(params.values()), cfg.lr, cfg.weight_decay)
    return Optimization(optimizer, adamw_preconditioner(optimizer, params) if cfg.optimizer == "adamw" else None)
