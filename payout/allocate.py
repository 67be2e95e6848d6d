"""Largest-remainder allocation of an integer amount, exact.

Each key's exact quota is total · w / Σw. Everyone first gets the floor of their quota;
the minor units left over (fewer than the number of keys) go one each to the largest
remainders, ties broken by key ascending. All arithmetic is on Python integers, so the
amounts always add up to the total and the result is the same on every machine.
"""

from __future__ import annotations

from collections.abc import Sequence


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
