"""nn.Embedding: sample n's gradient adds its output gradients into the rows it looked up."""

from __future__ import annotations

import torch
from torch import nn

from royalty.attribution.engine.rules.base import Dense, PerSample, register


def embedding_magnitude(module: nn.Embedding, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    if "weight" not in names:
        return {}
    dim = module.weight.shape[1]
    m = torch.zeros(module.weight.shape, dtype=grad_out.dtype, device=grad_out.device)
    m.index_add_(0, x.reshape(-1), grad_out.abs().reshape(-1, dim))
    if module.padding_idx is not None:
        m[module.padding_idx] = 0
    return {"weight": m}


@register(nn.Embedding, ("weight",), embedding_magnitude)
def embedding(module: nn.Embedding, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]) -> dict[str, PerSample]:
    if module.max_norm is not None or module.scale_grad_by_freq:
        # both change the gradient away from a plain scatter of grad_out
        raise ValueError("nn.Embedding with max_norm or scale_grad_by_freq is not supported")
    if "weight" not in names:
        return {}
    n = x.shape[0]
    idx = x.reshape(n, -1)
    gy = grad_out.reshape(n, idx.shape[1], -1)
    g = torch.zeros((n, *module.weight.shape), dtype=grad_out.dtype, device=grad_out.device)
    g.scatter_add_(1, idx.unsqueeze(-1).expand_as(gy), gy)
    if module.padding_idx is not None:
        g[:, module.padding_idx] = 0  # torch never updates the padding row
    return {"weight": Dense(g)}
