"""The training pass: the step's gradient, as the sum of the per-sample gradients.

Plain training (`--no-values`, the warm-up, the audit's retrainings) and valued training
run this one pass, so `.grad` is the same reduction in both, bit for bit, by
construction — and the weight gradient is computed once, not once by autograd and again
by the rules (docs/design.md §2):

1. forward the micro-batch with every covered module hooked;
2. one backward that stops at the covered modules' outputs: autograd computes every
   activation gradient plain training does, and no weight gradient;
3. the per-layer rules turn (input, output gradient) into per-sample representations;
   a layer's per-sample gradients are built where they fit (`materialize_limit` per
   layer, `built_limit` in all) and the values reuse them;
4. `.grad` += Σ over the rows of each parameter's per-sample gradients (built ones summed,
   the others reduced straight from the factors with the layer's own weight-gradient
   kernel).

Which layers are built depends on the batch's shapes only, never on the targets or on
whether values are taken.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from royalty.attribution.engine.capture import Capture, Covered, capturing
from royalty.attribution.engine.config import EngineConfig
from royalty.attribution.engine.rules import RULES, Built, Factored, PerSample, rule_for
from royalty.errors import UnsupportedModelError

LossFn = Callable[[], torch.Tensor]  # runs the model, returns one unreduced loss per row


def plan_model(model: nn.Module) -> tuple[Covered, ...]:
    """Every module with trainable direct parameters, each covered by a rule — or refuse."""
    covered: list[Covered] = []
    uncovered: list[str] = []
    for name, module in model.named_modules():
        trainable = tuple(n for n, p in module.named_parameters(recurse=False) if p.requires_grad)
        if not trainable:
            continue
        rule = rule_for(module)
        missing = trainable if rule is None else tuple(n for n in trainable if n not in rule.param_names)
        for n in missing:
            uncovered.append(f"{name}.{n} ({type(module).__name__})" if name else f"{n} ({type(module).__name__})")
        if rule is not None:
            covered.append(Covered(name, module, tuple(n for n in trainable if n in rule.param_names)))
    if uncovered:
        supported = ", ".join(sorted(t.__name__ for t in RULES))
        raise UnsupportedModelError(
            "no attribution rule covers these trainable parameters: "
            + ", ".join(uncovered)
            + f". Supported layers: {supported}. Freeze them (requires_grad=False) to train without them."
        )
    if not covered:
        raise UnsupportedModelError("the model has no trainable parameters")
    return tuple(covered)


class TrainPass:
    """Backwards a training batch into `.grad` and returns its per-sample representations.

    Holds the model's plan and whether the first-step self-check has run; nothing per step.
    """

    def __init__(self, model: nn.Module, config: EngineConfig = EngineConfig()) -> None:
        self.config = config
        self.covered = plan_model(model)
        self.params: dict[str, nn.Parameter] = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self._checked = not config.self_check

    def run(self, micro: Sequence[LossFn], keep: bool = True) -> tuple[list[dict[str, PerSample]], list[torch.Tensor], float]:
        """Each micro-batch's per-sample representations and row losses, and the last one's mean loss.

        `.grad` accumulates over the micro-batches, as repeated `backward()` calls would.
        `keep=False` (plain training): each layer's representation is dropped once summed,
        so no more than one layer's per-sample gradients are held at a time; the
        arithmetic is the same, and the representations returned are empty.
        """
        trains: list[dict[str, PerSample]] = []
        row_losses: list[torch.Tensor] = []
        for fn in micro:
            check = not self._checked  # the first micro-batch of the first step
            with capturing(self.covered, grab_grads=False) as cap:
                losses = fn()
                loss = losses.mean()
                names = list(self.params)
                # the self-check's reference: autograd's own gradient of the same loss
                truth = torch.autograd.grad(loss, [self.params[n] for n in names], retain_graph=True, allow_unused=True) if check else None
                outs = cap.outputs()
                got = torch.autograd.grad(loss, outs, retain_graph=check and losses.shape[0] > 1, allow_unused=True)
                cap.set_output_grads([g if g is not None else torch.zeros_like(o) for g, o in zip(got, outs)])
                outs.clear()  # the activations go with the graph
            _upcast(cap)
            train = cap.collect()
            if truth is None:  # the representations now hold the captures: each goes once summed
                cap.calls.clear()
                cap.grads.clear()
            kept = self._sum_into_grads(train, keep or truth is not None)
            if truth is not None:  # against this micro-batch's gradient alone
                self._self_check(kept, cap, losses, dict(zip(names, truth)))
                self._checked = True
            trains.append(kept if keep else {})
            row_losses.append(losses.detach())
        return trains, row_losses, float(loss.detach())

    def _sum_into_grads(self, train: dict[str, PerSample], keep: bool) -> dict[str, PerSample]:
        """`.grad` += each parameter's summed per-sample gradients; the representations, with
        the per-sample gradients built where they fit, if `keep`."""
        budget = self.config.built_limit
        kept: dict[str, PerSample] = {}
        for name in list(train):
            rep = train.pop(name)  # once summed and not kept, nothing holds it
            p = self.params[name]
            if isinstance(rep, Factored):
                g, _, d, q = rep.dims
                size = rep.n * g * d * q * p.element_size()
                if size <= self.config.materialize_limit and size <= budget:
                    budget -= size
                    rep = Built(rep, rep.materialize())
            summed = rep.summed().reshape(p.shape).to(p.dtype)
            if p.grad is None:
                p.grad = summed
            else:
                p.grad.add_(summed)
            if keep:
                kept[name] = rep
        return kept

    def _self_check(self, train: Mapping[str, PerSample], cap: Capture, losses: torch.Tensor, truth: Mapping[str, torch.Tensor | None]) -> None:
        """Refuse a model whose per-sample gradients the hooks cannot see whole.

        Two checks, each parameter's error judged against the magnitude of the terms its
        gradient sums (Σ over samples and positions of |term|, rules/base.py). That
        magnitude bounds the rounding of any order of summation and is never zero by
        symmetry: a bias before a GroupNorm of one channel per group (diffusers' default
        UNet2DModel) has a gradient of exactly zero, and both sides compute rounding noise.

        - sums: Σ of the per-sample gradients equals the gradient autograd computes (a
          weight used outside its module's forward adds terms the hooks never see);
        - one row: row 0's per-sample gradient equals the gradient of row 0's loss alone,
          from a second backward of the retained graph (a layer that mixes samples, such
          as BatchNorm in training mode, passes the first check: the hooks see the whole
          batch's gradient, but each row's share of it is not that row's own).
        """
        whole = cap.magnitudes()
        rows = int(losses.shape[0])
        first_row = cap.magnitudes(slice(0, 1)) if rows > 1 else None
        own: dict[str, torch.Tensor | None] = {}
        if rows > 1:
            # row 0's loss alone, weighted as the mean weights it: equal to the captured row 0
            weight = torch.zeros_like(losses)
            weight[0] = 1.0 / rows
            names = list(self.params)
            got = torch.autograd.grad(losses, [self.params[n] for n in names], weight, allow_unused=True)
            own = dict(zip(names, got))
        tol = self.config.self_check_rtol
        floor = 1e-6 * max((float(m.abs().max()) for m in whole.values() if m.numel()), default=0.0)
        not_summing, mixing = [], []
        for name, p in self.params.items():
            g = truth[name] if truth[name] is not None else torch.zeros_like(p)
            rep = train.get(name)
            if rep is None:  # no covered call reached it: autograd must agree it has no gradient
                if _off(g, torch.zeros_like(g)) > 0:
                    not_summing.append(name)
                continue
            per_sample = (rep.materialize() if isinstance(rep, Factored) else rep.g).reshape(-1, *g.shape)
            rtol = tol if tol is not None else 1e-3 if g.dtype in (torch.float32, torch.float16, torch.bfloat16) else 1e-8
            if _off(per_sample.sum(0), g) > rtol * max(_scale(whole[name]), floor):
                not_summing.append(name)
            elif first_row is not None:
                mine = own[name] if own[name] is not None else torch.zeros_like(g)
                if _off(per_sample[0], mine) > rtol * max(_scale(first_row[name]), floor):
                    mixing.append(name)
        if not_summing:
            raise UnsupportedModelError(
                "per-sample gradients do not add up to the training gradient for: "
                + ", ".join(not_summing)
                + " (a parameter used outside its module's forward, which the per-layer hooks do not see)"
            )
        if mixing:
            raise UnsupportedModelError(
                "a training row's per-sample gradient is not the gradient of its own loss for: "
                + ", ".join(mixing)
                + " (a layer mixing the samples of a batch, such as BatchNorm in training mode: "
                "put it in eval mode or replace it, e.g. with GroupNorm)"
            )


def _off(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def _scale(m: torch.Tensor) -> float:
    return float(m.abs().max()) if m.numel() else 0.0


_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _upcast(cap: Capture) -> None:
    """Mixed precision: the rules compute per-sample gradients in float32.

    Under autocast a layer's input and output gradient can be bf16; the per-sample
    gradients are then the float32 products of those bf16 factors — the gradient the
    low-precision step used, up to the rounding of autograd's own bf16 products.
    Float32 captures are left untouched.
    """
    for call in cap.calls:
        if call.x.dtype in _LOW_PRECISION:
            call.x = call.x.float()
    for i, g in enumerate(cap.grads):
        if g is not None and g.dtype in _LOW_PRECISION:
            cap.grads[i] = g.float()
