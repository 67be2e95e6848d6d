"""nn.Linear: weight gradient Σ_p b_p a_pᵀ over token positions; bias Σ_p b_p."""

from __future__ import annotations

import torch
from torch import nn

from royalty.attribution.engine.rules.base import Dense, Patches, PerSample, flatten_positions, register


def linear_magnitude(module: nn.Linear, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    b = flatten_positions(grad_out).abs()
    out: dict[str, torch.Tensor] = {}
    if "weight" in names:
        out["weight"] = torch.einsum("npd,npi->di", b, flatten_positions(x).abs())
    if "bias" in names:
        out["bias"] = b.sum(dim=(0, 1))
    return out


@register(nn.Linear, ("weight", "bias"), linear_magnitude)
def linear(module: nn.Linear, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    if x.dim() == 1:  # unbatched call: no per-sample structure to recover
        raise ValueError("nn.Linear called on an unbatched input")
    b = flatten_positions(grad_out)
    out: dict[str, PerSample] = {}
    if "weight" in names:
        out["weight"] = Patches(flatten_positions(x).unsqueeze(1), b.unsqueeze(1), module.weight.shape)
    if "bias" in names:
        out["bias"] = Dense(b.sum(dim=1))
    return out
