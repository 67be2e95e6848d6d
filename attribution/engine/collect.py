"""One step's raw material for crediting the applied update (attribution/engine/window.py).

The same two passes as `ValueEngine.step` — the training batch's backward exactly as
plain training runs it, then the targets' output gradients only — but instead of
own-step dot products it returns flattened vectors over the trainable parameters (in
`ValueEngine.params` order): every training row's gradient ∇ℓ(z), every target's
gradient ∇ℓ_T(x_k), and for order 2 each target's Hessian-vector product with the
update the optimizer is about to apply. `target_vectors` is the targets' half alone: the
secant curvature (docs/design.md §1.6) takes it again once the step is applied.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from royalty.attribution.engine.hvp import TargetSide, hessian_vector_products
from royalty.attribution.engine.paths import target_sums
from royalty.attribution.engine.rules import Factored, PerSample
from royalty.attribution.engine.step import LossFn, ValueEngine


@dataclass(frozen=True)
class TargetVectors:
    """The targets at the current weights, gathered over processes."""

    grads: torch.Tensor  # [K, D] ∇ℓ_T(x_k)
    losses: torch.Tensor  # [K] float64


def target_vectors(engine: ValueEngine, targets: TargetSide) -> TargetVectors:
    """Every target's gradient, flattened in `engine.params` order, and its loss."""
    target, per_target, _ = engine.target_pass(targets)
    gather = targets.gather if targets.gather is not None else (lambda local: local)
    grads = torch.cat([target_sums(target[n], targets.index, targets.count).reshape(targets.count, -1) for n in engine.params], dim=1)
    return TargetVectors(gather(grads), gather(per_target.detach().to(torch.float64)))


@dataclass(frozen=True)
class Collected:
    per_sample: torch.Tensor  # [B_local, D] ∇ℓ(z) of this call's rows, micro-batches in order
    target_grads: torch.Tensor  # [K, D] ∇ℓ_T(x_k) (gathered over processes)
    target_hvps: torch.Tensor | None  # [K, D] H_k Δw_t, order 2 only
    train_loss: float
    target_losses: torch.Tensor  # [K] float64
    row_losses: torch.Tensor  # [B_local]


def flat_rows(rep: PerSample, scale: float = 1.0) -> torch.Tensor:
    """[N, numel] per-sample gradients in the parameter's own element order."""
    g = rep.materialize() if isinstance(rep, Factored) else rep.g
    g = g.reshape(g.shape[0], -1)
    return g * scale if scale != 1.0 else g


def collect(
    engine: ValueEngine,
    train_losses: LossFn | Sequence[LossFn],
    targets: TargetSide,
    direction: Callable[[], Mapping[str, torch.Tensor]] | None,
    finish_grads: Callable[[], None] | None = None,
    at_weights: TargetVectors | None = None,
) -> Collected:
    """Backward the mean training loss into `.grad` and gather the step's vectors.

    `direction()` is called after the gradients are final (it may read them): the update
    Δw_t the optimizer will apply, per parameter, for the Hessian-vector products; None:
    none are taken (order 1, or the secant curvature). `at_weights`: the targets' vectors
    at these very weights, already taken (the previous step's secant pass), not recomputed.
    """
    micro = (train_losses,) if callable(train_losses) else tuple(train_losses)
    trains, row_losses, last_loss = engine.train_pass(micro)
    if finish_grads is not None:
        finish_grads()
    names = list(engine.params)
    # captured gradients are of each micro-batch's mean loss: × its size gives ∇ℓ(z)
    per_sample = torch.cat([
        torch.cat([flat_rows(train[n], float(rows.shape[0])) for n in names], dim=1)
        for train, rows in zip(trains, row_losses)
    ])
    del trains  # the captures and built gradients: not held through the targets' pass
    tv = at_weights if at_weights is not None else target_vectors(engine, targets)
    gather = targets.gather if targets.gather is not None else (lambda local: local)
    hvps_t = None
    if direction is not None:
        if engine.config.order != 2:
            raise ValueError("Hessian-vector products are the second-order term's: the engine is configured for order 1")
        dw = direction()
        hv = hessian_vector_products(
            engine.model, targets, engine.params, [dw[n] for n in names], engine.config.hvp, engine.config.hvp_chunk_rows
        )
        hvps_t = gather(torch.cat([h.reshape(targets.count, -1) for h in hv], dim=1))
    return Collected(
        per_sample=per_sample,
        target_grads=tv.grads,
        target_hvps=hvps_t,
        train_loss=last_loss if len(micro) == 1 else float(torch.cat(row_losses).mean()),
        target_losses=tv.losses,
        row_losses=torch.cat(row_losses),
    )
