"""In-Run Data Shapley for one optimizer step (docs/design.md §1–2).

Per step, the training pass over the training batch (attribution/engine/gradient.py: the
pass plain training runs too, so the optimizer sees bit-identical gradients, `.grad`
being the sum of the per-sample gradients) and one forward+backward over the target
rows. Hooks record each covered layer's inputs and output gradients; the per-layer
rules and paths turn them into the B×K matrix

    φ(z, k) = (η / B) · ⟨P ∇ℓ_T(x_k), ∇ℓ(z)⟩        (P = I for SGD)

and, for order 2, the curvature term −½ (η/B)² ∇ℓ(z)ᵀ P H_k P Σ_j ∇ℓ(z_j).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from royalty.attribution.engine.capture import capturing
from royalty.attribution.engine.config import EngineConfig
from royalty.attribution.engine.gradient import LossFn, TrainPass, plan_model
from royalty.attribution.engine.hvp import TargetSide, hessian_vector_products
from royalty.attribution.engine.paths import PathName, choose_path, dots_dense, dots_ghost, shapes_of, target_sums
from royalty.attribution.engine.rules import Built, Dense, Factored, PerSample
from royalty.errors import UsageError

__all__ = ["EngineConfig", "LossFn", "StepValues", "Update", "ValueEngine", "plan_model"]


@dataclass(frozen=True)
class Update:
    """What the values need of the step's update: w ← w − lr · P ⊙ (mean gradient over `rows` rows)."""

    lr: float
    # P (same shapes) from this step's gradients; None: plain SGD (P = I)
    precondition: Callable[[Mapping[str, torch.Tensor]], Mapping[str, torch.Tensor]] | None = None
    rows: int | None = None  # rows the update averages over, across micro-batches and processes; None: this call's


@dataclass(frozen=True)
class _Batch:
    """The training side of one step, as the second-order term needs it."""

    trains: Sequence[Mapping[str, PerSample]]  # per micro-batch: each parameter's per-sample representation
    sizes: Sequence[int]  # rows per micro-batch
    grads: Mapping[str, torch.Tensor]  # the step's gradient (`.grad`)
    precond: Mapping[str, torch.Tensor] | None
    rows_total: int


@dataclass(frozen=True)
class StepValues:
    first: torch.Tensor  # [B, K] float64: first-order values
    second: torch.Tensor  # [B, K] float64: the second-order term alone (0 for order 1)
    train_loss: float  # mean training loss at w_t
    target_losses: torch.Tensor  # [K] float64: ℓ_T(w_t, x_k)
    paths: dict[str, PathName]  # the path each parameter took
    row_losses: torch.Tensor | None = None  # [B] this call's training losses, micro-batches in order

    @property
    def total(self) -> torch.Tensor:
        return self.first + self.second


class ValueEngine:
    """Computes a step's values; holds only the model's plan (and its training pass), never per-step state."""

    def __init__(self, model: nn.Module, config: EngineConfig = EngineConfig()) -> None:
        self.config = config
        self.model = model
        self.passes = TrainPass(model, config)
        self.covered = self.passes.covered
        self._type_of = {
            f"{c.name}.{p}" if c.name else p: type(c.module).__name__ for c in self.covered for p in c.params
        }
        self.params = self.passes.params

    def step(
        self,
        train_losses: LossFn | Sequence[LossFn],
        targets: TargetSide,
        update: Update,
        finish_grads: Callable[[], None] | None = None,
    ) -> StepValues:
        """Backward the mean training loss into `.grad` (as plain training does) and value it.

        `train_losses` is one loss function, or one per micro-batch (gradient accumulation:
        each is backwarded in turn, `.grad` accumulating). `finish_grads()` runs after the
        last backward and before P and the values are taken from `.grad`: it turns the
        accumulated local gradients into the step's gradient (accumulation scaling, the
        data-parallel all-reduce). The values are (η / update.rows)⟨P ∇ℓ_T, ∇ℓ(z)⟩ for this
        call's rows. With `targets.gather`, each target's gradient sums (and Hessian-vector
        products) are gathered, so the values cover all K targets; ghost, which needs the
        targets' factors rather than their sums, is then not used.
        """
        micro = (train_losses,) if callable(train_losses) else tuple(train_losses)
        # 1. the training batch: exactly the backward plain training runs (per micro-batch)
        trains, row_losses, last_loss = self.train_pass(micro)
        if finish_grads is not None:
            finish_grads()
        grads = {n: p.grad for n, p in self.params.items()}
        sizes = [int(r.shape[0]) for r in row_losses]
        rows_total = update.rows if update.rows is not None else sum(sizes)

        # 2. the targets at the same weights: output gradients only, no weight gradients
        target, per_target, n_target_rows = self.target_pass(targets)
        gather = targets.gather if targets.gather is not None else (lambda local: local)
        all_target_losses = gather(per_target.detach().to(torch.float64))

        # 3. first order, per parameter: the target side once, dotted with every micro-batch
        precond = dict(update.precondition(grads)) if update.precondition is not None else None
        firsts = [
            torch.zeros(size, all_target_losses.shape[0], dtype=torch.float64, device=row_losses[-1].device)
            for size in sizes
        ]
        chosen: dict[str, PathName] = {}
        dense = precond is not None or targets.gather is not None
        for name in self.params:
            tg = target[name]
            u = None  # the parameter's [K, ...] target gradients: once per step, freed after
            for train, first in zip(trains, firsts):
                tr = train[name]
                path = self._path(name, tr, tg, n_target_rows, targets.count, dense_target=dense)
                chosen[name] = path
                if path == "ghost":
                    assert isinstance(tr, Factored) and isinstance(tg, Factored)
                    d = dots_ghost(tr, tg, targets.index, targets.count)
                else:
                    if u is None:
                        u = gather(target_sums(tg, targets.index, targets.count))
                        if precond is not None:
                            u = u * _as_rows(precond[name], tr).unsqueeze(0)
                    d = dots_dense(tr, u, path)
                first += d.to(torch.float64)
        for first, size in zip(firsts, sizes):
            # captured train gradients are of the micro-batch's *mean* loss, i.e. ∇ℓ(z)/size;
            # the step averages over rows_total rows (× 1.0 exactly when they are the same)
            first *= update.lr
            first *= size / rows_total

        seconds = [torch.zeros_like(f) for f in firsts]
        if self.config.order == 2:
            batch = _Batch(trains, sizes, grads, precond, rows_total)
            seconds = self._second_order(targets, batch, chosen, update.lr)

        return StepValues(
            first=firsts[0] if len(firsts) == 1 else torch.cat(firsts),
            second=seconds[0] if len(seconds) == 1 else torch.cat(seconds),
            train_loss=last_loss if len(micro) == 1 else float(torch.cat(row_losses).mean()),
            target_losses=all_target_losses,
            paths=chosen,
            row_losses=torch.cat(row_losses),
        )

    def train_pass(self, micro: Sequence[LossFn]) -> tuple[list[dict[str, PerSample]], list[torch.Tensor], float]:
        """Each micro-batch's per-sample representations and row losses, and the last one's mean loss."""
        return self.passes.run(micro)

    def target_pass(self, targets: TargetSide) -> tuple[dict[str, PerSample], torch.Tensor, int]:
        """The targets' per-layer representations, each target's mean loss, and the row count."""
        counts = torch.bincount(targets.index, minlength=targets.count)
        if bool((counts == 0).any()):
            raise ValueError("every target needs at least one row")
        # the parameters' dtype, never the training loss's: under autocast that can be bf16
        weights = 1.0 / counts.to(next(iter(self.params.values())).dtype)
        with capturing(self.covered, grab_grads=False) as tcap:
            rows = targets.losses(None)
            per_target = torch.zeros(targets.count, dtype=rows.dtype, device=rows.device).index_add(
                0, targets.index, rows * weights[targets.index].to(rows.dtype)
            )
            outs = tcap.outputs()
            out_grads = torch.autograd.grad(per_target.sum(), outs, allow_unused=True)
            tcap.set_output_grads([g if g is not None else torch.zeros_like(o) for g, o in zip(out_grads, outs)])
        return tcap.collect(), per_target, rows.shape[0]

    # -- helpers -----------------------------------------------------------------

    def _path(self, name: str, tr: PerSample, tg: PerSample, rows: int, k: int, dense_target: bool) -> PathName:
        pinned = self.config.paths.get(name) or self.config.paths.get(self._type_of[name]) or self.config.paths.get("*")
        if isinstance(tr, Dense):
            return "materialize"  # already per-sample gradients: nothing else to choose
        if pinned is not None:
            if pinned == "ghost" and dense_target:
                raise UsageError(f"path 'ghost' cannot be used for {name}: the target side is preconditioned (Adam) or shared over processes")
            return pinned
        assert isinstance(tg, Factored)
        itemsize = self.params[name].element_size()
        shapes = shapes_of(tr, tg, rows, k, itemsize, train_built=isinstance(tr, Built))
        return choose_path(shapes, dense_target, self.config.materialize_limit)

    def _second_order(
        self, targets: TargetSide, batch: "_Batch", chosen: dict[str, PathName], lr: float
    ) -> list[torch.Tensor]:
        names = list(self.params)
        grads, precond, rows_total = batch.grads, batch.precond, batch.rows_total
        # v = P Σ_j ∇ℓ(z_j) over the step's whole batch; `.grad` holds its mean
        v = [grads[n] * rows_total * (precond[n] if precond is not None else 1.0) for n in names]
        hvps = hessian_vector_products(self.model, targets, self.params, v, self.config.hvp, self.config.hvp_chunk_rows)
        hv = [targets.gather(h) for h in hvps] if targets.gather is not None else hvps
        outs = []
        for train, size in zip(batch.trains, batch.sizes):
            out = torch.zeros(size, hv[0].shape[0], dtype=torch.float64, device=v[0].device)
            for name, h in zip(names, hv):
                tr = train[name]
                u = h if precond is None else h * precond[name].unsqueeze(0)
                path = chosen[name] if chosen[name] != "ghost" else "materialize"
                out += dots_dense(tr, _as_rows(u, tr), path).to(torch.float64)
            # train reps are ∇ℓ(z)/size, so out = (1/size) ∇ℓ(z)ᵀ P H P Σ∇ℓ; the term is
            # −½ (η/B)² ∇ℓ(z)ᵀ P H P Σ∇ℓ = out · (−½ η² / B) · (size / B), B = rows_total
            out = out * (-0.5 * lr * lr / rows_total)
            out *= size / rows_total
            outs.append(out)
        return outs


def _as_rows(t: torch.Tensor, rep: PerSample) -> torch.Tensor:
    """A parameter-shaped tensor (with any leading axes) in the rep's [G, d, p] layout."""
    if isinstance(rep, Factored):
        g, _, d, p = rep.dims
        return t.reshape(*t.shape[: t.dim() - len(rep.shape)], g, d, p)
    return t
