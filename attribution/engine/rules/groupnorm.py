"""nn.GroupNorm: per-sample affine gradients Σ_positions b ⊙ x̂ (weight) and Σ b (bias)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from royalty.attribution.engine.rules.base import Dense, PerSample, register


def groupnorm_magnitude(module: nn.GroupNorm, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    batch_and_spatial = (0, *range(2, grad_out.dim()))
    out: dict[str, torch.Tensor] = {}
    if "weight" in names:
        x_hat = F.group_norm(x, module.num_groups, eps=module.eps)
        out["weight"] = (grad_out * x_hat).abs().sum(dim=batch_and_spatial)
    if "bias" in names:
        out["bias"] = grad_out.abs().sum(dim=batch_and_spatial)
    return out


@register(nn.GroupNorm, ("weight", "bias"), groupnorm_magnitude)
def groupnorm(module: nn.GroupNorm, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    spatial = tuple(range(2, grad_out.dim()))
    out: dict[str, PerSample] = {}
    if "weight" in names:
        x_hat = F.group_norm(x, module.num_groups, eps=module.eps)
        out["weight"] = Dense((grad_out * x_hat).sum(dim=spatial))
    if "bias" in names:
        out["bias"] = Dense(grad_out.sum(dim=spatial))
    return out
