"""What the engine is asked to compute, and how (one frozen config for the whole run)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from royalty.attribution.engine.hvp import HVP_METHODS, HvpMethod
from royalty.attribution.engine.paths import DEFAULT_MATERIALIZE_LIMIT, PathName
from royalty.errors import UsageError

# Bytes of per-sample gradients the training pass keeps built over one micro-batch, all
# layers together: the built layers' sums are `.grad`, and the values reuse them.
DEFAULT_BUILT_LIMIT = 1024 * 2**20


@dataclass(frozen=True)
class EngineConfig:
    order: int = 1
    # Pin the path of parameters: key = full parameter name, or a module type name
    # ("Linear", "Conv2d"), or "*"; value = "ghost" | "materialize" | "forward".
    paths: Mapping[str, PathName] = field(default_factory=dict)
    materialize_limit: int = DEFAULT_MATERIALIZE_LIMIT
    # The training pass builds a layer's per-sample gradients (and sums them into `.grad`)
    # while the layer's are at most `materialize_limit` bytes and all built so far at most
    # `built_limit`, in parameter order; the others' `.grad` comes straight from the
    # factors. A function of the batch's shapes only: plain training builds the same.
    built_limit: int = DEFAULT_BUILT_LIMIT
    # On the first step, check Σ of the per-sample gradients equals the gradient autograd
    # computes (catches a parameter used outside its module's forward, which `.grad`, a
    # sum of the per-sample gradients, would silently miss) and one row's equals the
    # gradient of its own loss (catches a layer mixing samples, e.g. BatchNorm)
    self_check: bool = True
    # Relative tolerance of that check; None: by the parameters' dtype. Mixed precision
    # (bf16 autocast) rounds autograd's gradient to 8 bits of mantissa: it needs more.
    self_check_rtol: float | None = None
    # Order 2: how the per-target Hessian-vector products run (attribution/engine/hvp.py), and
    # about how many target rows one batched double backward holds (bounds its memory)
    hvp: HvpMethod = "loop"
    hvp_chunk_rows: int = 64

    def __post_init__(self) -> None:
        if self.order not in (1, 2):
            raise UsageError(f"order must be 1 or 2, got {self.order}")
        if self.hvp not in HVP_METHODS:
            raise UsageError(f"hvp must be one of {', '.join(HVP_METHODS)}, got {self.hvp!r}")
        if self.hvp_chunk_rows < 1:
            raise UsageError(f"hvp_chunk_rows must be at least 1, got {self.hvp_chunk_rows}")
        if self.materialize_limit < 0 or self.built_limit < 0:
            raise UsageError("materialize_limit and built_limit must not be negative")
        for key, path in self.paths.items():
            if path not in ("ghost", "materialize", "forward"):
                raise UsageError(f"unknown path {path!r} for {key!r}")
