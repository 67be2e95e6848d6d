"""Shapley values of a cooperative game given by its utility table. Pure numpy, no torch.

A coalition is a `frozenset` of players; a utility is a number or a numpy vector (the
audit's games are vector-valued: one utility per target, all computed from the same
retrainings). The empty coalition's utility is 0 unless the table says otherwise.

- `exact_shapley`: the definition, over all 2^n coalitions (the audit uses it for n ≤ 6);
- `permutation_shapley`: the mean marginal contribution over sampled player orders,
  unbiased for the Shapley value, with its standard error (Castro et al. 2009);
- `leave_one_out`: U(N) − U(N \\ {i}).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

EXACT_MAX_PLAYERS = 6  # 2^6 = 64 coalitions: beyond this the audit samples permutations

Player = Hashable
Coalition = frozenset
Utility = Callable[[frozenset], "np.ndarray | float"]


def all_coalitions(players: Sequence[Player]) -> list[frozenset]:
    """Every subset of `players`, smallest first (the empty one first), stable order."""
    return [frozenset(c) for size in range(len(players) + 1) for c in itertools.combinations(players, size)]


def _lookup(table: Mapping[frozenset, object]) -> Utility:
    def utility(coalition: frozenset) -> np.ndarray:
        if coalition in table:
            return np.asarray(table[coalition], dtype=np.float64)
        if not coalition:
            return np.float64(0.0)
        raise KeyError(f"the utility table has no entry for coalition {sorted(map(str, coalition))}")

    return utility


def exact_shapley(players: Sequence[Player], table: Mapping[frozenset, object]) -> dict[Player, np.ndarray]:
    """φ_i = Σ_{S ⊆ N∖{i}} |S|!(n−|S|−1)!/n! · (U(S ∪ {i}) − U(S))."""
    _check_players(players)
    u = _lookup(table)
    n = len(players)
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    values: dict[Player, np.ndarray] = {}
    for i in players:
        others = [p for p in players if p != i]
        total = np.float64(0.0)
        for s in range(n):
            for rest in itertools.combinations(others, s):
                coalition = frozenset(rest)
                total = total + weight[s] * (u(coalition | {i}) - u(coalition))
        values[i] = np.asarray(total, dtype=np.float64)
    return values


def leave_one_out(players: Sequence[Player], table: Mapping[frozenset, object]) -> dict[Player, np.ndarray]:
    """U(N) − U(N ∖ {i}): what removing one player alone would lose."""
    _check_players(players)
    u = _lookup(table)
    grand = frozenset(players)
    return {i: np.asarray(u(grand) - u(grand - {i}), dtype=np.float64) for i in players}


def sample_permutations(players: Sequence[Player], count: int, seed: int) -> list[tuple[Player, ...]]:
    """`count` uniformly random orders of the players, reproducible from `seed`."""
    _check_players(players)
    if count < 1:
        raise ValueError(f"need at least one permutation, got {count}")
    rng = np.random.default_rng(seed)
    return [tuple(players[j] for j in rng.permutation(len(players))) for _ in range(count)]


def permutation_coalitions(permutation: Sequence[Player]) -> list[frozenset]:
    """The non-empty prefixes of one order: the coalitions its marginals need."""
    return [frozenset(permutation[: j + 1]) for j in range(len(permutation))]


@dataclass(frozen=True)
class ShapleyEstimate:
    values: dict[Player, np.ndarray]
    stderr: dict[Player, np.ndarray]  # standard error of the mean; NaN with one permutation
    permutations: int


def permutation_shapley(
    players: Sequence[Player], permutations: Sequence[Sequence[Player]], utility: Utility | Mapping[frozenset, object]
) -> ShapleyEstimate:
    """Mean marginal contribution of each player over the given orders."""
    _check_players(players)
    if not permutations:
        raise ValueError("need at least one permutation")
    u = _lookup(utility) if isinstance(utility, Mapping) else utility
    marginals: dict[Player, list[np.ndarray]] = {p: [] for p in players}
    for order in permutations:
        if sorted(map(repr, order)) != sorted(map(repr, players)):
            raise ValueError(f"{order} is not a permutation of the players")
        coalition: frozenset = frozenset()
        before = np.asarray(u(coalition), dtype=np.float64)
        for p in order:
            coalition = coalition | {p}
            after = np.asarray(u(coalition), dtype=np.float64)
            marginals[p].append(after - before)
            before = after
    m = len(permutations)
    values = {p: np.mean(marginals[p], axis=0) for p in players}
    if m > 1:
        stderr = {p: np.std(marginals[p], axis=0, ddof=1) / math.sqrt(m) for p in players}
    else:
        stderr = {p: np.full_like(values[p], np.nan) for p in players}
    return ShapleyEstimate(values, stderr, m)


def _check_players(players: Sequence[Player]) -> None:
    if len(players) == 0:
        raise ValueError("a game needs at least one player")
    if len(set(players)) != len(players):
        raise ValueError(f"players must be distinct: {list(players)}")
