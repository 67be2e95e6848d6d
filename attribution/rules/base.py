"""Per-sample gradient representations and the rule registry.

A rule turns what one call of a module saw — its input and the gradient of the loss
with respect to its output — into per-sample gradients of the module's own parameters,
in one of two exact forms:

- `Factored`: sample n's gradient is Σ_p b[n,g,p] a[n,g,p]ᵀ (per group g), the form of
  every linear map (Linear, Conv2d after unfold). Dot products between two such
  gradients can be taken without building them ("ghost"), by building them
  ("materialize"), or by applying a built target gradient to the inputs ("forward").
- `Dense`: the per-sample gradients themselves, [N, *param.shape]. Used where they are
  cheap (biases, norm affine parameters, embeddings).

Rules never keep state: everything they need arrives as arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(frozen=True)
class Factored:
    """Per-sample gradient Σ_p b[n,g,p] ⊗ a[n,g,p], reshaped to the parameter's shape."""

    a: torch.Tensor  # [N, G, P, p]: layer inputs (patches) per position
    b: torch.Tensor  # [N, G, P, d]: output gradients per position
    shape: torch.Size  # the parameter's shape; [G*d, p] reshapes onto it

    @property
    def n(self) -> int:
        return self.a.shape[0]

    def materialize(self) -> torch.Tensor:
        """[N, G, d, p] per-sample gradients."""
        return torch.einsum("ngpd,ngpi->ngdi", self.b, self.a)

    def merge(self, other: Factored) -> Factored:
        # A module called twice in one forward: its gradient sums over both calls'
        # positions, which is the same factored form over the concatenated positions.
        return Factored(torch.cat([self.a, other.a], dim=2), torch.cat([self.b, other.b], dim=2), self.shape)


@dataclass(frozen=True)
class Dense:
    """Per-sample gradients [N, *param.shape]."""

    g: torch.Tensor

    @property
    def n(self) -> int:
        return self.g.shape[0]

    def merge(self, other: Dense) -> Dense:
        return Dense(self.g + other.g)


PerSample = Factored | Dense


class Rule(Protocol):
    """Computes per-sample gradients of a module's direct parameters from one call."""

    param_names: tuple[str, ...]

    def __call__(
        self, module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]
    ) -> dict[str, PerSample]:
        """`x`: the call's input, `grad_out`: ∂loss/∂output; `names`: trainable params wanted."""
        ...


RULES: dict[type[nn.Module], Rule] = {}


def register(module_type: type[nn.Module], param_names: tuple[str, ...]) -> Callable[[Callable], Rule]:
    """Decorator: register a per-sample gradient function for exactly `module_type`."""

    def wrap(fn: Callable) -> Rule:
        fn.param_names = param_names  # type: ignore[attr-defined]
        RULES[module_type] = fn  # type: ignore[assignment]
        return fn  # type: ignore[return-value]

    return wrap


def rule_for(module: nn.Module) -> Rule | None:
    # Exact type match: a subclass may override forward() and compute something else.
    return RULES.get(type(module))


def flatten_positions(t: torch.Tensor) -> torch.Tensor:
    """[N, ..., C] → [N, P, C]: every leading axis but the batch is a position."""
    return t.reshape(t.shape[0], -1, t.shape[-1])
