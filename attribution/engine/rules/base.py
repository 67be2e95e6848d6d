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

Each rule also has a magnitude function: from the same call, Σ over the batch and the
positions of the absolute value of every term that adds up to the parameter's gradient
(e.g. Σ |b|·|a| for a linear map, Σ |b| for a bias). It bounds the rounding error of any
summation of those terms, and unlike the gradient itself it is not zero when the terms
cancel (a bias followed by a GroupNorm of one channel per group has a gradient of exactly
zero): the engine's first-step self-check judges its error against it.

Rules never keep state: everything they need arrives as arguments.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


class Factored(abc.ABC):
    """Per-sample gradients of the form Σ_p b[n,g,p] ⊗ a[n,g,p] (per group g).

    Subclasses keep whatever is cheapest to hold (token inputs, or a convolution's
    input image) and compute the three paths' primitives from it.
    """

    shape: torch.Size  # the parameter's shape; [G, d, p] reshapes onto it

    @property
    @abc.abstractmethod
    def n(self) -> int: ...

    @property
    @abc.abstractmethod
    def dims(self) -> tuple[int, int, int, int]:
        """(G, P, d, p): groups, positions, output and input width per group."""

    @abc.abstractmethod
    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(a [N, G, P, p], b [N, G, P, d]) for the ghost path."""

    @abc.abstractmethod
    def materialize(self) -> torch.Tensor:
        """[N, G, d, p] per-sample gradients."""

    @abc.abstractmethod
    def forward_dots(self, targets: torch.Tensor) -> torch.Tensor:
        """[N, K]: Σ_p b_npᵀ (U_k a_np) for U = targets [K, G, d, p]."""

    def summed(self) -> torch.Tensor:
        """[G, d, p]: Σ over the samples, the gradient of the call's (mean) loss."""
        a, b = self.factors()
        return torch.einsum("ngpd,ngpi->gdi", b, a)

    def group_sums(self, index: torch.Tensor, n_groups: int) -> torch.Tensor:
        """[K, G, d, p]: Σ of the per-sample gradients of the rows with index == k."""
        rows = self.materialize()
        out = torch.zeros((n_groups, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        return out.index_add_(0, index, rows)

    def merge(self, other: Factored) -> Factored:
        # A module called twice in one forward: its gradient sums over both calls'
        # positions, which is the same factored form over the concatenated positions.
        a1, b1 = self.factors()
        a2, b2 = other.factors()
        return Patches(torch.cat([a1, a2], dim=2), torch.cat([b1, b2], dim=2), self.shape)


@dataclass(frozen=True)
class Patches(Factored):
    """The factors themselves: inputs a and output gradients b per position."""

    a: torch.Tensor  # [N, G, P, p]
    b: torch.Tensor  # [N, G, P, d]
    shape: torch.Size

    @property
    def n(self) -> int:
        return self.b.shape[0]

    @property
    def dims(self) -> tuple[int, int, int, int]:
        _, g, pos, d = self.b.shape
        return g, pos, d, self.a.shape[-1]

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a, self.b

    def materialize(self) -> torch.Tensor:
        return torch.einsum("ngpd,ngpi->ngdi", self.b, self.a)

    def forward_dots(self, targets: torch.Tensor) -> torch.Tensor:
        cols = []
        for u in targets:  # one target at a time keeps memory at N·P·d
            y = torch.einsum("ngpi,gdi->ngpd", self.a, u)
            cols.append((y * self.b).sum(dim=(1, 2, 3)))
        return torch.stack(cols, dim=1)


@dataclass(frozen=True)
class Built(Factored):
    """A factored representation with its per-sample gradients already built.

    The training pass builds them once (to sum them into `.grad`) and the values reuse
    them; the factors stay available for the ghost and forward paths.
    """

    rep: Factored
    g: torch.Tensor  # [N, G, d, p]: rep.materialize()

    @property
    def shape(self) -> torch.Size:  # type: ignore[override]
        return self.rep.shape

    @property
    def n(self) -> int:
        return self.rep.n

    @property
    def dims(self) -> tuple[int, int, int, int]:
        return self.rep.dims

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.rep.factors()

    def materialize(self) -> torch.Tensor:
        return self.g

    def forward_dots(self, targets: torch.Tensor) -> torch.Tensor:
        return self.rep.forward_dots(targets)

    def summed(self) -> torch.Tensor:
        return self.g.sum(dim=0)


@dataclass(frozen=True)
class Dense:
    """Per-sample gradients [N, *param.shape]."""

    g: torch.Tensor

    @property
    def n(self) -> int:
        return self.g.shape[0]

    def merge(self, other: Dense) -> Dense:
        return Dense(self.g + other.g)

    def summed(self) -> torch.Tensor:
        """[*param.shape]: Σ over the samples."""
        return self.g.sum(dim=0)


PerSample = Factored | Dense


MagnitudeFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, tuple[str, ...]], dict[str, torch.Tensor]]


class Rule(Protocol):
    """Computes per-sample gradients of a module's direct parameters from one call."""

    param_names: tuple[str, ...]
    # (module, x, grad_out, names) -> {name: [*param.shape]}: Σ over batch and positions of
    # |each term of the gradient| (see the module docstring)
    magnitude: MagnitudeFn

    def __call__(
        self, module: nn.Module, x: torch.Tensor, grad_out: torch.Tensor, names: tuple[str, ...]
    ) -> dict[str, PerSample]:
        """`x`: the call's input, `grad_out`: ∂loss/∂output; `names`: trainable params wanted."""
        ...


RULES: dict[type[nn.Module], Rule] = {}


def register(module_type: type[nn.Module], param_names: tuple[str, ...], magnitude: MagnitudeFn) -> Callable[[Callable], Rule]:
    """Decorator: register a per-sample gradient function for exactly `module_type`."""

    def wrap(fn: Callable) -> Rule:
        fn.param_names = param_names  # type: ignore[attr-defined]
        fn.magnitude = magnitude  # type: ignore[attr-defined]
        RULES[module_type] = fn  # type: ignore[assignment]
        return fn  # type: ignore[return-value]

    return wrap


def rule_for(module: nn.Module) -> Rule | None:
    # Exact type match: a subclass may override forward() and compute something else.
    return RULES.get(type(module))


def flatten_positions(t: torch.Tensor) -> torch.Tensor:
    """[N, ..., C] → [N, P, C]: every leading axis but the batch is a position."""
    return t.reshape(t.shape[0], -1, t.shape[-1])
