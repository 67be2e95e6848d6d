"""nn.LayerNorm: per-sample affine gradients summed over every non-normalised position."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from royalty.attribution.engine.rules.base import Dense, PerSample, register


def layernorm_magnitude(module: nn.LayerNorm, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    # the batch and every position: all axes before the normalised trailing ones
    leading = tuple(range(grad_out.dim() - len(module.normalized_shape)))
    out: dict[str, torch.Tensor] = {}
    if "weight" in names:
        x_hat = F.layer_norm(x, tuple(module.normalized_shape), eps=module.eps)
        out["weight"] = (grad_out * x_hat).abs().sum(dim=leading)
    if "bias" in names:
        out["bias"] = grad_out.abs().sum(dim=leading)
    return out


@register(nn.LayerNorm, ("weight", "bias"), layernorm_magnitude)
def layernorm(module: nn.LayerNorm, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    shape = tuple(module.normalized_shape)
    # positions: every axis between the batch axis and the normalised trailing axes
    positions = tuple(range(1, grad_out.dim() - len(shape)))
    out: dict[str, PerSample] = {}
    if "weight" in names:
        x_hat = F.layer_norm(x, shape, eps=module.eps)
        out["weight"] = Dense((grad_out * x_hat).sum(dim=positions) if positions else grad_out * x_hat)
    if "bias" in names:
        out["bias"] = Dense(grad_out.sum(dim=positions) if positions else grad_out)
    return out
