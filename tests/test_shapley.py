"""The Shapley routines against games whose values are known by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from royalty.attribution.audit.metrics import agreement, l1_share_distance, shares, spearman
from royalty.attribution.audit.shapley import (
    all_coalitions,
    exact_shapley,
    leave_one_out,
    permutation_coalitions,
    permutation_shapley,
    sample_permutations,
)


def table_of(players, u):
    return {c: u(c) for c in all_coalitions(players)}


def test_all_coalitions_lists_every_subset_once() -> None:
    coalitions = all_coalitions(("a", "b", "c"))
    assert len(coalitions) == 8 and len(set(coalitions)) == 8
    assert coalitions[0] == frozenset() and coalitions[-1] == frozenset("abc")


def test_additive_game_gives_each_player_its_own_worth() -> None:
    worth = {"a": 3.0, "b": -1.0, "c": 0.5, "d": 2.0}
    values = exact_shapley(tuple(worth), table_of(tuple(worth), lambda c: sum(worth[p] for p in c)))
    for p, w in worth.items():
        assert values[p] == pytest.approx(w, abs=1e-12)


def test_glove_game_by_hand() -> None:
    """One left glove (a), two right gloves (b, c); a pair is worth 1: φ = (2/3, 1/6, 1/6)."""
    def u(c):
        return float("a" in c and ("b" in c or "c" in c))

    values = exact_shapley(("a", "b", "c"), table_of(("a", "b", "c"), u))
    assert values["a"] == pytest.approx(2 / 3)
    assert values["b"] == pytest.approx(1 / 6) and values["c"] == pytest.approx(1 / 6)


def test_symmetric_players_get_equal_values_and_null_player_gets_zero() -> None:
    players = ("a", "b", "n")

    def u(c):  # a and b are interchangeable; n adds nothing to any coalition
        k = len(c - {"n"})
        return [0.0, 1.0, 5.0][k]

    values = exact_shapley(players, table_of(players, u))
    assert values["a"] == pytest.approx(values["b"]) and values["a"] == pytest.approx(2.5)
    assert values["n"] == pytest.approx(0.0, abs=1e-12)


def test_efficiency_values_sum_to_the_grand_coalition_on_a_random_vector_game() -> None:
    rng = np.random.default_rng(7)
    players = ("p", "q", "r", "s", "t")
    table = {c: rng.normal(size=3) for c in all_coalitions(players)}
    table[frozenset()] = np.zeros(3)
    values = exact_shapley(players, table)
    np.testing.assert_allclose(sum(values.values()), table[frozenset(players)], atol=1e-12)


def test_empty_coalition_defaults_to_zero_and_missing_entries_are_refused() -> None:
    table = {frozenset("a"): 1.0, frozenset("b"): 2.0, frozenset("ab"): 4.0}
    values = exact_shapley(("a", "b"), table)
    assert values["a"] == pytest.approx(1.5) and values["b"] == pytest.approx(2.5)
    del table[frozenset("b")]
    with pytest.raises(KeyError):
        exact_shapley(("a", "b"), table)


def test_leave_one_out_by_hand() -> None:
    players = ("a", "b", "c")

    def u(c):
        return float("a" in c and ("b" in c or "c" in c))

    loo = leave_one_out(players, table_of(players, u))
    # removing a breaks every pair; removing b or c alone leaves the other right glove
    assert loo == {"a": pytest.approx(1.0), "b": pytest.approx(0.0), "c": pytest.approx(0.0)}


def test_every_permutation_once_gives_the_exact_values() -> None:
    rng = np.random.default_rng(3)
    players = ("a", "b", "c", "d")
    table = {c: float(rng.normal()) for c in all_coalitions(players)}
    table[frozenset()] = 0.0
    exact = exact_shapley(players, table)
    estimate = permutation_shapley(players, list(itertools.permutations(players)), table)
    for p in players:
        assert estimate.values[p] == pytest.approx(exact[p], abs=1e-12)


def test_permutation_sampling_is_unbiased_and_converges() -> None:
    rng = np.random.default_rng(11)
    players = tuple("abcdefgh")  # 8 players: beyond the exact limit the audit uses
    weights = rng.normal(size=8)

    def u(c):  # a non-additive game: the square of an additive one
        return float(sum(weights[players.index(p)] for p in c)) ** 2

    table = {c: u(c) for c in all_coalitions(players)}
    exact = exact_shapley(players, table)
    # unbiased: the mean of many independent 4-order estimates lands on the exact values
    small = [permutation_shapley(players, sample_permutations(players, 4, seed=s), table) for s in range(300)]
    for p in players:
        estimates = np.array([e.values[p] for e in small])
        assert abs(estimates.mean() - exact[p]) <= 4 * estimates.std(ddof=1) / np.sqrt(len(estimates))
    # converges: 2000 orders are within their standard errors and close in absolute terms
    big = permutation_shapley(players, sample_permutations(players, 2000, seed=5), table)
    scale = max(abs(v) for v in exact.values())
    for p in players:
        assert abs(big.values[p] - exact[p]) <= 4 * big.stderr[p] + 1e-12
        assert abs(big.values[p] - exact[p]) < 0.05 * scale
    # efficiency holds order by order
    estimate = permutation_shapley(players, sample_permutations(players, 3, seed=1), table)
    assert sum(estimate.values.values()) == pytest.approx(table[frozenset(players)])


def test_sampled_permutations_are_reproducible_and_prefixes_cover_them() -> None:
    players = tuple("abcdefg")
    assert sample_permutations(players, 4, seed=2) == sample_permutations(players, 4, seed=2)
    assert sample_permutations(players, 4, seed=2) != sample_permutations(players, 4, seed=3)
    perm = sample_permutations(players, 1, seed=0)[0]
    assert sorted(perm) == sorted(players)
    prefixes = permutation_coalitions(perm)
    assert [len(c) for c in prefixes] == list(range(1, 8)) and prefixes[-1] == frozenset(players)


def test_bad_games_are_refused() -> None:
    with pytest.raises(ValueError):
        exact_shapley((), {})
    with pytest.raises(ValueError):
        exact_shapley(("a", "a"), {})
    with pytest.raises(ValueError):
        permutation_shapley(("a", "b"), [("a", "c")], {frozenset("a"): 1.0})


def test_agreement_metrics_by_hand() -> None:
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1.0, 1.0]), np.array([1.0, 2.0])))
    np.testing.assert_allclose(shares(np.array([3.0, -1.0, 1.0])), [0.75, 0.0, 0.25])
    np.testing.assert_allclose(shares(np.array([-3.0, -1.0])), [0.5, 0.5])  # no one positive: equal
    assert l1_share_distance(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(2.0)
    a = np.array([[1.0, 2.0], [2.0, 1.0], [3.0, -1.0]])  # owners × targets
    b = np.array([[1.0, 3.0], [2.0, 2.0], [4.0, 1.0]])
    m = agreement(a, b)
    assert m["spearman_mean"] == pytest.approx(1.0) and m["spearman_targets"] == 2
    assert m["top_owner_agreement"] == pytest.approx(1.0)
    assert m["sign_agreement"] == pytest.approx(5 / 6)
    # owner totals: a = (3, 3, 2), b = (4, 4, 5): a's tie goes to the first owner, b's top is the last
    assert m["overall"]["top_owner_agrees"] is False
    assert m["overall"]["spearman"] == pytest.approx(-1.0)


def _records(plan, base, worth, seeds):
    """Stored retrainings of an additive game: training on T lowers each target by Σ worth."""
    from royalty.attribution.audit.state import Retraining

    return {
        (owners, s): Retraining(owners, s, tuple(base - sum(worth[o] for o in owners)), 1.0, "")
        for owners, s in plan.work()
        if s < seeds
    }


def test_sampled_audit_plan_covers_its_orders_and_recovers_an_additive_game() -> None:
    from royalty.attribution.audit.service import GamePlan, shapley_by_seed

    players = tuple("abcdefg")  # 7 owners: sampled
    perms = tuple(sample_permutations(players, 3, seed=0))
    plan = GamePlan(players, frozenset({"z"}), seeds=2, permutations=perms)
    work = plan.work()
    assert len(work) == len(set(work)) and all("z" in owners for owners, _ in work)
    assert (frozenset({"z"}), 0) in work  # the background alone: the game's zero point
    worth = {p: np.array([float(i + 1), -float(i)]) for i, p in enumerate(players)} | {"z": np.array([5.0, 5.0])}
    base = np.array([10.0, 10.0])
    seeds = shapley_by_seed(plan, base, _records(plan, base, worth, seeds=1))
    assert sorted(seeds) == [0]  # seed 1 has no retrainings: left out, not guessed
    assert seeds[0]["permutations"] == 3
    for p in players:  # additive: every order gives each owner its own worth; background excluded
        np.testing.assert_allclose(seeds[0]["shapley"][p], worth[p], atol=1e-12)
        np.testing.assert_allclose(seeds[0]["loo"][p], worth[p], atol=1e-12)


def test_exact_audit_plan_trains_every_coalition_once_per_seed() -> None:
    from royalty.attribution.audit.service import GamePlan, shapley_by_seed

    plan = GamePlan(("a", "b", "c"), frozenset(), seeds=2, permutations=())
    work = plan.work()
    assert len(work) == 2 * 7 and [s for _, s in work] == [0] * 7 + [1] * 7  # seed 0 complete first
    worth = {"a": np.array([1.0]), "b": np.array([2.0]), "c": np.array([-0.5])}
    records = _records(plan, np.array([3.0]), worth, seeds=2)
    del records[(frozenset("ab"), 1)]
    seeds = shapley_by_seed(plan, np.array([3.0]), records)
    assert sorted(seeds) == [0]  # an incomplete seed is not used
    for p in worth:
        np.testing.assert_allclose(seeds[0]["shapley"][p], worth[p], atol=1e-12)
