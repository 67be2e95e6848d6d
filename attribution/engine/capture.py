"""Record what each covered module saw during one forward and one backward.

While the context is open, every call of a covered module stores its input and its
output tensor; after the backward, `collect` pairs each input with ∂loss/∂output and
asks the module's rule for per-sample gradients. Everything lives in the `Capture`
object, never on the modules, and all hooks are removed when the context closes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from royalty.attribution.engine.rules import PerSample, rule_for


@dataclass(frozen=True)
class Covered:
    """One module whose trainable parameters a rule covers."""

    name: str  # module path inside the model
    module: nn.Module
    params: tuple[str, ...]  # trainable direct parameters, by local name


@dataclass
class _Call:
    covered: Covered
    x: torch.Tensor


@dataclass
class Capture:
    calls: list[_Call] = field(default_factory=list)
    # the outputs, kept only when the caller asks autograd.grad for them itself
    outs: list[torch.Tensor] = field(default_factory=list)
    grads: list[torch.Tensor | None] = field(default_factory=list)

    def outputs(self) -> list[torch.Tensor]:
        return self.outs

    def set_output_grads(self, grads: Sequence[torch.Tensor | None]) -> None:
        self.grads[:] = list(grads)

    def collect(self) -> dict[str, PerSample]:
        """Per-sample gradients for every covered parameter, keyed by full parameter name."""
        result: dict[str, PerSample] = {}
        for call, grad_out in zip(self.calls, self.grads, strict=True):
            if grad_out is None:
                raise RuntimeError(f"no gradient reached the output of {call.covered.name}")
            rule = rule_for(call.covered.module)
            assert rule is not None
            per_param = rule(call.covered.module, call.x, grad_out.detach(), call.covered.params)
            for local, rep in per_param.items():
                key = f"{call.covered.name}.{local}" if call.covered.name else local
                result[key] = result[key].merge(rep) if key in result else rep
        return result

    def magnitudes(self, rows: slice = slice(None)) -> dict[str, torch.Tensor]:
        """Σ over samples, positions and calls of |each term| of every covered parameter's gradient.

        The scale the engine's self-check judges `collect`'s sums against (rules/base.py);
        `rows`: those samples only.
        """
        result: dict[str, torch.Tensor] = {}
        for call, grad_out in zip(self.calls, self.grads, strict=True):
            if grad_out is None:
                raise RuntimeError(f"no gradient reached the output of {call.covered.name}")
            rule = rule_for(call.covered.module)
            assert rule is not None
            module, x, gy = call.covered.module, call.x[rows], grad_out.detach()[rows]
            for local, m in rule.magnitude(module, x, gy, call.covered.params).items():
                key = f"{call.covered.name}.{local}" if call.covered.name else local
                result[key] = result[key] + m if key in result else m
        return result


@contextlib.contextmanager
def capturing(covered: Sequence[Covered], grab_grads: bool = True) -> Iterator[Capture]:
    """Hook every covered module for the duration of the block.

    `grab_grads`: record each output's gradient during the caller's backward; otherwise
    keep the outputs so the caller can ask autograd.grad for them (`set_output_grads`).
    """
    cap = Capture()
    handles = []
    grads = cap.grads  # hooks hold this list, never the output tensor: a tensor whose
    # own hook refers back to it is a cycle through autograd that Python cannot collect

    def make_hook(cov: Covered):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: torch.Tensor) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            if not isinstance(output, torch.Tensor) or not output.requires_grad:
                return  # nothing flows back here (e.g. under no_grad): nothing to attribute
            cap.calls.append(_Call(cov, x.detach()))
            grads.append(None)
            if grab_grads:
                slot = len(grads) - 1

                def store(g: torch.Tensor) -> None:
                    grads[slot] = g

                output.register_hook(store)
            else:
                cap.outs.append(output)

        return hook

    try:
        for cov in covered:
            handles.append(cov.module.register_forward_hook(make_hook(cov), with_kwargs=True))
        yield cap
    finally:
        for h in handles:
            h.remove()
