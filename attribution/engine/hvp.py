"""Per-target Hessian-vector products H_k v for the second-order term (docs/design.md §1.3).

Two exact ways, chosen by `EngineConfig.hvp`:

- `loop` (default): one forward and double backward per target, on that target's rows.
- `batched`: one torch.func program, vmapped over the targets, takes each target's
  gradient and differentiates its dot with v again. Targets with the same number of
  rows run as one batch (in chunks of about `chunk_rows` rows), so a step pays the
  per-operation overhead of a double backward once per chunk, not once per target.
  Measured on the CPU (BENCHMARKS.md, engine): faster where that overhead dominates
  (16 px: second order 1.2–1.6x faster), slower where the arithmetic does (32 px with
  16 targets: 0.8x; vmapped attention runs its matrix products and softmax backward
  several times slower), and it holds about twice the memory. Hence not the default.

Attention runs in plain differentiable ops in both: the fused CPU kernel has no second
derivative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

HvpMethod = Literal["batched", "loop"]
HVP_METHODS: tuple[HvpMethod, ...] = ("batched", "loop")

# one loss per target row, restricted to the given row indices (None: every row)
RowLossFn = Callable[[torch.Tensor | None], torch.Tensor]


def hessian_vector_products(
    model: nn.Module,
    target_losses: RowLossFn,
    target_index: torch.Tensor,
    n_targets: int,
    names: Sequence[str],
    params: Sequence[nn.Parameter],
    v: Sequence[torch.Tensor],
    method: HvpMethod = "loop",
    chunk_rows: int = 64,
) -> list[torch.Tensor]:
    """[K, *shape] per parameter: H_k v, H_k the Hessian of target k's mean row loss."""
    out = [torch.empty((n_targets, *p.shape), dtype=p.dtype, device=p.device) for p in params]
    with sdpa_kernel([SDPBackend.MATH]):
        if method == "loop":
            _loop(target_losses, target_index, n_targets, params, v, out)
        elif method == "batched":
            _batched(model, target_losses, target_index, n_targets, names, params, v, out, chunk_rows)
        else:
            raise ValueError(f"unknown Hessian-vector product method {method!r}")
    return out


def _loop(target_losses, target_index, n_targets, params, v, out) -> None:
    for k in range(n_targets):
        loss = target_losses((target_index == k).nonzero().squeeze(1)).mean()
        g = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
        dot = sum((gi * vi).sum() for gi, vi in zip(g, v) if gi is not None)
        h = torch.autograd.grad(dot, params, allow_unused=True)
        for j, hj in enumerate(h):
            out[j][k] = hj if hj is not None else 0


class _Rows(nn.Module):
    """`target_losses` as a module over `model`, so torch.func can swap the weights in."""

    def __init__(self, model: nn.Module, target_losses: RowLossFn) -> None:
        super().__init__()
        self.model = model
        self.target_losses = target_losses

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return self.target_losses(rows)


def _batched(model, target_losses, target_index, n_targets, names, params, v, out, chunk_rows: int) -> None:
    wrapper = _Rows(model, target_losses)
    keys = [f"model.{n}" for n in names]
    weights = {k: p.detach() for k, p in zip(keys, params)}
    direction = dict(zip(keys, v))

    def target_hvp(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(wrapper, w, (rows,)).mean()

        def dot(w: dict[str, torch.Tensor]) -> torch.Tensor:
            g = grad(loss)(w)
            return sum((g[k] * direction[k]).sum() for k in keys)

        return grad(dot)(weights)

    # targets with the same number of rows form one batch: rows [n, M], vmapped over n
    counts = torch.bincount(target_index, minlength=n_targets)
    order = torch.argsort(target_index, stable=True)  # rows of target 0, then 1, …
    starts = torch.cumsum(counts, 0) - counts
    for m in sorted(set(counts.tolist())):
        if m == 0:
            raise ValueError("every target needs at least one row")
        ks = (counts == m).nonzero().squeeze(1)
        rows = order[starts[ks].unsqueeze(1) + torch.arange(m, device=order.device)]  # [n, M]
        hv = vmap(target_hvp, chunk_size=max(1, chunk_rows // m))(rows)
        for j, key in enumerate(keys):
            out[j][ks] = hv[key]
