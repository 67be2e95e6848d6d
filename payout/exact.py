"""Exact, order-independent sums of float64 values per group.

Adding floats rounds at every step, so a float sum depends on row order and an owner
split into two names would not add back to the same number. Every finite float is
m · 2^e with an integer mantissa m, so sums are done exactly on integers instead: all
values are put on one common power-of-two scale 2^scale and each group's sum is the
integer Σ m · 2^(e − scale). The result is a set of Python integers sharing the
denominator 2^-scale, which is exactly what largest-remainder allocation wants.

The heavy lifting stays vectorised: rows are grouped by (group, exponent); within one
exponent the mantissas are plain integers whose partial sums numpy can add exactly
(split in two 26/27-bit halves so that float64 accumulation never rounds), and only
the handful of (group, exponent) cells touch Python integers.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_HALF = 26
_LOW_MASK = (1 << _HALF) - 1
# Each half is < 2^27 in magnitude; 2^25 of them sum to < 2^52, still exact in float64.
_CHUNK = 1 << 25


@dataclass(frozen=True)
class ExactSums:
    """Group sums as integers: group g's exact sum is numerators[g] · 2^scale."""

    numerators: tuple[int, ...]
    scale: int

    def fraction(self, group: int) -> Fraction:
        return _to_fraction(self.numerators[group], self.scale)


def _to_fraction(numerator: int, scale: int) -> Fraction:
    return Fraction(numerator * (1 << scale)) if scale >= 0 else Fraction(numerator, 1 << -scale)


def exact_group_sums(groups: np.ndarray, values: np.ndarray, n_groups: int) -> ExactSums:
    """Exact sum of `values` for each group id in 0..n_groups-1 (values must be finite)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    groups = np.ascontiguousarray(groups, dtype=np.int64)
    mantissa, exponent = np.frexp(values)
    # frexp gives |mantissa| in [0.5, 1): times 2^53 it is an exact integer.
    ints = np.ldexp(mantissa, 53).astype(np.int64)
    exps = exponent.astype(np.int64) - 53
    nonzero = ints != 0
    if not nonzero.any():
        return ExactSums(tuple([0] * n_groups), 0)
    scale = int(exps[nonzero].min())
    # Zeros add nothing, but frexp gives them exponent 0, which may lie below the scale.
    exps = np.where(nonzero, exps, scale)

    totals = [0] * n_groups
    for start in range(0, len(values), _CHUNK):
        stop = start + _CHUNK
        _accumulate(totals, groups[start:stop], ints[start:stop], exps[start:stop], scale)
    return ExactSums(tuple(totals), scale)


def _accumulate(totals: list[int], groups: np.ndarray, ints: np.ndarray, exps: np.ndarray, scale: int) -> None:
    span = int(exps.max()) - scale + 1
    cell_keys = groups * span + (exps - scale)
    # Hash-based factorisation: linear time, and pyarrow is loaded anyway for parquet.
    encoded = pc.dictionary_encode(pa.array(cell_keys))
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    cells = encoded.dictionary.to_numpy(zero_copy_only=False)
    # Arithmetic shift keeps ints == (high << 26) + low with 0 <= low < 2^26.
    high = np.bincount(codes, weights=(ints >> _HALF).astype(np.float64), minlength=len(cells))
    low = np.bincount(codes, weights=(ints & _LOW_MASK).astype(np.float64), minlength=len(cells))
    for key, hi, lo in zip(cells.tolist(), high.tolist(), low.tolist()):
        group, shift = divmod(key, span)
        totals[group] += ((int(hi) << _HALF) + int(lo)) << shift


def fraction_of(numerator: int, scale: int) -> Fraction:
    return _to_fraction(numerator, scale)
