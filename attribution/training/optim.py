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
