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

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

HvpMethod = Literal["batched", "loop"]
HVP_METHODS: tuple[HvpMethod, ...] = ("batched", "loop")

# one loss per target row, restricted to the given row indices (None: every row)
RowLossFn = Callable[[torch.Tensor | None], torch.Tensor]


@dataclass(frozen=True)
class TargetSide:
    """A step's targets as one call evaluates them: their rows' losses and which target each row is.

    A target's loss is the mean of its rows. `gather`: these `count` targets are one
    process's share of the step's; `gather(local)` turns a [count, ...] tensor into the
    step's [K, ...] (every process's shares in target order). None: all of them.
    """

    losses: RowLossFn
    index: torch.Tensor  # [rows]: the target of each row, in 0..count-1
    count: int
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None

    def rows_of(self, k: int) -> torch.Tensor:
        return (self.index == k).nonzero().squeeze(1)


def hessian_vector_products(
    model: nn.Module,
    targets: TargetSide,
    params: Mapping[str, nn.Parameter],
    v: Sequence[torch.Tensor],
    method: HvpMethod = "loop",
    chunk_rows: int = 64,
) -> list[torch.Tensor]:
    """[K, *shape] per parameter (in `params`' order): H_k v, H_k the Hessian of target k's mean row loss."""
    out = [torch.empty((targets.count, *p.shape), dtype=p.dtype, device=p.device) for p in params.values()]
    with sdpa_kernel([SDPBackend.MATH]):
        if method == "loop":
            _loop(targets, list(params.values()), v, out)
        elif method == "batched":
            _batched(model, targets, params, v, out, chunk_rows)
        else:
            raise ValueError(f"unknown Hessian-vector product method {method!r}")
    return out


def _loop(targets: TargetSide, params, v, out) -> None:
    for k in range(targets.count):
        loss = targets.losses(targets.rows_of(k)).mean()
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


def _batched(model, targets: TargetSide, params: Mapping[str, nn.Parameter], v, out, chunk_rows: int) -> None:
    wrapper = _Rows(model, targets.losses)
    keys = [f"model.{n}" for n in params]
    weights = {k: p.detach() for k, p in zip(keys, params.values())}
    direction = dict(zip(keys, v))

    def target_hvp(rows: torch.Tensor) -> dict[str, torch.Tensor]:
        def loss(w: dict[str, torch.Tensor]) -> torch.Tensor:
            return functional_call(wrapper, w, (rows,)).mean()

        def dot(w: dict[str, torch.Tensor]) -> torch.Tensor:
            g = grad(loss)(w)
            return sum((g[k] * direction[k]).sum() for k in keys)

        return grad(dot)(weights)

    # targets with the same number of rows form one batch: rows [n, M], vmapped over n
    counts = torch.bincount(targets.index, minlength=targets.count)
    order = torch.argsort(targets.index, stable=True)  # rows of target 0, then 1, …
    starts = torch.cumsum(counts, 0) - counts
    for m in sorted(set(counts.tolist())):
        if m == 0:
            raise ValueError("every target needs at least one row")
        ks = (counts == m).nonzero().squeeze(1)
        rows = order[starts[ks].unsqueeze(1) + torch.arange(m, device=order.device)]  # [n, M]
        hv = vmap(target_hvp, chunk_size=max(1, chunk_rows // m))(rows)
        for j, key in enumerate(keys):
            out[j][ks] = hv[key]
