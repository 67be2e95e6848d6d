"""The three exact ways to take ⟨per-sample train gradient, target gradient⟩ per parameter.

- ghost: Σ_{p,q} (a_zp·a_tq)(b_zp·b_tq), never building a gradient; cost ∝ P·Q.
- materialize: build each train sample's gradient, then dot it with each target's.
- forward: build each target's gradient U_k once, then Σ_p b_zpᵀ (U_k a_zp) — like one
  extra forward of the layer per target; never holds B per-sample gradients.

`choose_path` is a pure function of the shapes so tests can pin every branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from royalty.attribution.engine.rules import Dense, Factored, PerSample

PathName = Literal["ghost", "materialize", "forward"]
PATHS: tuple[PathName, ...] = ("ghost", "materialize", "forward")

# Above this many bytes of per-sample gradients for one parameter, prefer `forward`.
DEFAULT_MATERIALIZE_LIMIT = 256 * 2**20


@dataclass(frozen=True)
class Shapes:
    """What the cost of one parameter's dot products depends on."""

    n_train: int  # B
    train_positions: int  # P
    n_target_rows: int  # T (targets × draws)
    target_positions: int  # Q
    n_targets: int  # K
    groups: int  # G
    d: int  # output width per group
    p: int  # input width per group
    itemsize: int
    # the training pass already built the B per-sample gradients (engine/gradient.py):
    # materialize then costs only the targets' side and the dots
    train_built: bool = False


def shapes_of(train: Factored, target: Factored, target_rows: int, n_targets: int, itemsize: int, train_built: bool = False) -> Shapes:
    g, p_pos, d, p = train.dims
    return Shapes(train.n, p_pos, target_rows, target.dims[1], n_targets, g, d, p, itemsize, train_built)


def choose_path(s: Shapes, needs_dense_target: bool, materialize_limit: int = DEFAULT_MATERIALIZE_LIMIT) -> PathName:
    """Cheapest exact path by multiply-add count; memory decides materialize vs forward.

    `needs_dense_target`: the target side is not a sum of rank-one terms (Adam's
    preconditioner, the second-order Hessian-vector product), which rules out ghost.
    """
    gdp = s.groups * s.d * s.p
    build = 0 if s.train_built else s.n_train * s.train_positions * gdp
    materialize = build + s.n_target_rows * s.target_positions * gdp + s.n_train * s.n_targets * gdp
    ghost = s.n_train * s.train_positions * s.n_target_rows * s.target_positions * s.groups * (s.d + s.p)
    if not needs_dense_target and ghost < materialize:
        return "ghost"
    if not s.train_built and s.n_train * gdp * s.itemsize > materialize_limit:
        return "forward"
    return "materialize"


def target_sums(rep: PerSample, target_index: torch.Tensor, n_targets: int) -> torch.Tensor:
    """Each target's gradient: the sum of its rows' per-sample gradients, [K, *rows' shape]."""
    if isinstance(rep, Factored):
        return rep.group_sums(target_index, n_targets)
    out = torch.zeros((n_targets, *rep.g.shape[1:]), dtype=rep.g.dtype, device=rep.g.device)
    return out.index_add_(0, target_index, rep.g)


def dots_ghost(train: Factored, target: Factored, target_index: torch.Tensor, n_targets: int) -> torch.Tensor:
    """[B, K] without building any gradient: Σ_g Σ_{p,q} (a_zp·a_tq)(b_zp·b_tq), summed per target."""
    ta, tb = train.factors()
    ua, ub = target.factors()
    n, g, p_pos, _ = ta.shape
    t, _, q_pos, _ = ua.shape
    # [G, B·P, T·Q] Gram matrices of inputs and of output gradients, per group
    aa = torch.bmm(ta.transpose(0, 1).reshape(g, n * p_pos, -1), ua.transpose(0, 1).reshape(g, t * q_pos, -1).transpose(1, 2))
    bb = torch.bmm(tb.transpose(0, 1).reshape(g, n * p_pos, -1), ub.transpose(0, 1).reshape(g, t * q_pos, -1).transpose(1, 2))
    per_row = (aa * bb).reshape(g, n, p_pos, t, q_pos).sum(dim=(0, 2, 4))  # [B, T]
    return per_row @ _onehot(target_index, n_targets, per_row.dtype)


def dots_materialize(train: PerSample, targets: torch.Tensor) -> torch.Tensor:
    """[B, K]: build every train sample's gradient, dot with each target's `targets[k]`."""
    g = train.materialize() if isinstance(train, Factored) else train.g
    return g.reshape(g.shape[0], -1) @ targets.reshape(targets.shape[0], -1).T


def dots_dense(train: PerSample, targets: torch.Tensor, path: PathName) -> torch.Tensor:
    """Dot with per-target matrices by the given non-ghost path (Dense always materializes)."""
    if isinstance(train, Dense) or path == "materialize":
        return dots_materialize(train, targets)
    if path == "forward":
        return train.forward_dots(targets)
    raise ValueError(f"path {path!r} cannot take a dense target gradient")


def _onehot(index: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.nn.functional.one_hot(index, n).to(dtype)
