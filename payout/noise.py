"""Refusing to pay by rounding noise.

Every value in values.parquet is a float64 computed from float arithmetic; a sum of
them that lands within a few rounding errors of zero carries no sign. Paying by such a
sum hands money to whichever owner's noise came out positive, so a group (an owner, or
an owner within one target) whose exact sum is that small against the magnitude of the
values summed is refused — never clipped, never paid.

The bound: `|Σ v| ≤ τ · Σ |v|` with `τ = max(NOISE_RTOL, n · 2⁻⁵²)` for `n` values. A
float64 sum of `n` terms is off by at most about `n · 2⁻⁵³ · Σ|v|`, and the values
themselves come out of longer float computations, so a margin of 1e-9 (about 2²³ units
of rounding) separates noise from any real total by orders of magnitude: real owner
totals on the sample runs sit at 1e-3 … 1 of their magnitude.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import numpy as np

from royalty.errors import DataError
from royalty.payout.exact import ExactSums, exact_group_sums

NOISE_RTOL = 1e-9
_ULP = 2.0**-52
_LISTED = 5  # groups named in the message; the count says how many more


def noise_tolerance(count: int) -> Fraction:
    """τ for a sum of `count` values, exactly."""
    return Fraction(max(NOISE_RTOL, count * _ULP))


def is_noise(total: Fraction, magnitude: Fraction, count: int) -> bool:
    """Whether `total`, a sum of `count` values whose absolute values sum to `magnitude`, is rounding."""
    return magnitude > 0 and abs(total) <= noise_tolerance(count) * magnitude


def refuse_noise(
    groups: np.ndarray,
    values: np.ndarray,
    sums: ExactSums,
    wanted: list[int],
    label: Callable[[int], str],
    column: str,
) -> None:
    """DataError naming every group in `wanted` whose exact sum is rounding noise."""
    n = len(sums.numerators)
    magnitude = exact_group_sums(groups, np.abs(values), n)
    count = np.bincount(groups, minlength=n)
    noisy = [g for g in wanted if is_noise(sums.fraction(g), magnitude.fraction(g), int(count[g]))]
    if not noisy:
        return
    shown = "; ".join(
        f"{label(g)}: Σ {column} = {float(sums.fraction(g)):.3g} over {int(count[g])} values of total magnitude "
        f"{float(magnitude.fraction(g)):.3g}"
        for g in noisy[:_LISTED]
    )
    more = f" (and {len(noisy) - _LISTED} more)" if len(noisy) > _LISTED else ""
    raise DataError(
        f"{len(noisy)} value sum(s) are indistinguishable from floating-point rounding, so their sign "
        f"cannot decide who is paid: {shown}{more}. A sum this close to 0 relative to what it adds up "
        "usually means the column cancels by construction; use another basis or pay per sale"
    )
