"""Largest-remainder allocation of an integer amount, exact.

Each key's exact quota is total · w / Σw. Everyone first gets the floor of their quota;
the minor units left over (fewer than the number of keys) go one each to the largest
remainders, ties broken by key ascending. All arithmetic is on Python integers, so the
amounts always add up to the total and the result is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def largest_remainder(total: int, keys: Sequence[str], weights: Sequence[int]) -> list[int]:
    """Split `total` minor units over `keys` in proportion to non-negative integer `weights`.

    Weights are integers on any common scale (only their ratios matter). At least one
    weight must be positive; the caller decides what an all-zero split means.
    """
    if len(keys) != len(weights):
        raise ValueError("keys and weights differ in length")
    if total < 0:
        raise ValueError("total must be non-negative")
    if any(w < 0 for w in weights):
        raise ValueError("weights must be non-negative (clip before allocating)")
    weight_sum = sum(weights)
    if weight_sum <= 0:
        raise ValueError("at least one weight must be positive")

    floors: list[int] = []
    remainders: list[int] = []
    for w in weights:
        q, r = divmod(total * w, weight_sum)
        floors.append(q)
        remainders.append(r)
    left = total - sum(floors)
    if left:
        # Only keys with a non-zero remainder can win a leftover unit, and there are
        # always at least `left` of them (Σ remainders = left · Σw).
        order = sorted(range(len(keys)), key=lambda i: (-remainders[i], keys[i]))
        for i in order[:left]:
            floors[i] += 1
    return floors


# Fast path of largest_remainder_many: float64 quotas are trusted only when the rounding
# they need is decided with a wide margin. For totals below 2^31 a quota's float error is
# below total · 2^-52 ≤ 2^-21; a fraction within 2^-19 of an integer, or two candidate
# remainders within 2^-18 of each other at the cut, send that row to the exact path.
_FAST_MAX_TOTAL = 1 << 31
_EDGE = 2.0**-19


def largest_remainder_many(totals: Sequence[int], keys: Sequence[str], weights: Sequence[int]) -> np.ndarray:
    """largest_remainder for several totals over the same keys and weights, one row each.

    Gives exactly what largest_remainder gives row by row (a float fast path is used only
    where it provably agrees, see above); built for per-sale splits, where thousands of
    sales share one target's weights. Rows are int64, or Python ints (object) when a
    total does not fit in int64.
    """
    if len(keys) != len(weights):
        raise ValueError("keys and weights differ in length")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError("weights must be non-negative with at least one positive")
    if any(t < 0 for t in totals):
        raise ValueError("totals must be non-negative")

    n = len(keys)
    dtype = np.int64 if all(t < (1 << 62) for t in totals) else object
    out = np.zeros((len(totals), n), dtype=dtype)
    exact_rows = np.ones(len(totals), dtype=bool)
    # Ties go to the smaller key; the fast path breaks them by position, so it runs on
    # positions sorted by key.
    positive = np.array([i for i in sorted(range(n), key=keys.__getitem__) if weights[i] > 0], dtype=np.int64)
    fast = np.array([r for r, t in enumerate(totals) if t < _FAST_MAX_TOTAL], dtype=np.int64)
    if len(fast) and len(positive) > 1:
        weight_sum = sum(weights)
        # int / int is correctly rounded in Python, even for integers beyond float range.
        shares = np.array([weights[i] / weight_sum for i in positive.tolist()])
        amounts = np.array([totals[r] for r in fast.tolist()], dtype=np.float64)
        quotas = amounts[:, None] * shares[None, :]
        floors = np.floor(quotas)
        fracs = quotas - floors
        left = (amounts - floors.sum(axis=1)).astype(np.int64)
        # Only the set of winners matters, not their order: the L-th largest fraction is
        # the threshold, and a clear gap below it (checked) makes the set exact.
        ranked = -np.sort(-fracs, axis=1)
        cut = np.clip(left, 1, len(positive) - 1)
        rows = np.arange(len(fast))
        threshold = ranked[rows, cut - 1]
        gap = threshold - ranked[rows, cut]
        safe = (
            ~((fracs < _EDGE) | (fracs > 1 - _EDGE)).any(axis=1)
            & (left >= 0)
            & (left < len(positive))
            & ((left == 0) | (gap > 2 * _EDGE))
        )
        bonus = (fracs >= threshold[:, None]) & (left > 0)[:, None]
        good = fast[safe]
        out[np.ix_(good, positive)] = (floors + bonus)[safe].astype(np.int64)
        exact_rows[good] = False
    for r in np.flatnonzero(exact_rows).tolist():
        out[r, :] = largest_remainder(totals[r], keys, weights)
    return out
