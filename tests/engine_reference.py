"""The slow, obviously-correct reference: one backward per sample, float64.

Shared by the engine tests; nothing here reuses engine code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

RowLoss = Callable[[nn.Module, slice], torch.Tensor]  # model, rows -> per-row losses


def per_sample_grads(model: nn.Module, loss_rows: Callable[[nn.Module, int], torch.Tensor], n: int) -> list[torch.Tensor]:
    """Flattened ∇ℓ(row i) for each row, one backward each."""
    params = [p for p in model.parameters() if p.requires_grad]
    out = []
    for i in range(n):
        g = torch.autograd.grad(loss_rows(model, i), params, allow_unused=True)
        out.append(torch.cat([(gi if gi is not None else torch.zeros_like(p)).reshape(-1) for gi, p in zip(g, params)]))
    return out


def target_grads(model: nn.Module, target_loss: Callable[[nn.Module, int], torch.Tensor], k: int) -> list[torch.Tensor]:
    return per_sample_grads(model, target_loss, k)


def reference_values(
    model: nn.Module,
    train_loss: Callable[[nn.Module, int], torch.Tensor],
    n_train: int,
    target_loss: Callable[[nn.Module, int], torch.Tensor],
    n_targets: int,
    lr: float,
    precond: torch.Tensor | None = None,
    order: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(first [B,K], second-order term [B,K]) by the definitions of docs/design.md §1.2–1.5."""
    gz = torch.stack(per_sample_grads(model, train_loss, n_train))  # [B, D]
    gt = torch.stack(target_grads(model, target_loss, n_targets))  # [K, D]
    p = torch.ones(gz.shape[1], dtype=gz.dtype, device=gz.device) if precond is None else precond
    first = lr / n_train * gz @ (p * gt).T
    second = torch.zeros_like(first)
    if order == 2:
        params = [q for q in model.parameters() if q.requires_grad]
        v_flat = p * gz.sum(0)
        for k in range(n_targets):
            def f(*ws: torch.Tensor, k: int = k) -> torch.Tensor:
                return _functional_loss(model, params, ws, lambda m: target_loss(m, k))

            vs = _unflatten(v_flat, params)
            with sdpa_kernel([SDPBackend.MATH]):  # the fused CPU attention has no double backward
                _, hv = torch.autograd.functional.hvp(f, tuple(q.detach() for q in params), tuple(vs))
            hv_flat = torch.cat([h.reshape(-1) for h in hv])
            second[:, k] = -0.5 * (lr / n_train) ** 2 * gz @ (p * hv_flat)
    return first, second


def _unflatten(flat: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    out, i = [], 0
    for q in params:
        out.append(flat[i : i + q.numel()].reshape(q.shape))
        i += q.numel()
    return out


class _LossOf(nn.Module):
    """Wraps `loss(model)` so torch.func.functional_call can substitute the weights."""

    def __init__(self, model: nn.Module, loss: Callable[[nn.Module], torch.Tensor]) -> None:
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self) -> torch.Tensor:
        return self.loss(self.model)


def _functional_loss(model: nn.Module, params: list[torch.Tensor], ws: tuple[torch.Tensor, ...], loss: Callable) -> torch.Tensor:
    names = [f"model.{n}" for n, q in model.named_parameters() if q.requires_grad]
    return torch.func.functional_call(_LossOf(model, loss), dict(zip(names, ws)), ())
