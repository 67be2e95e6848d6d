"""The subset game's small-step limit (attribution/audit/subset_linear.py) against hand-made games."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from royalty.attribution.audit.shapley import all_coalitions, exact_shapley
from royalty.attribution.audit.subset_linear import linear_subset_shapley


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
def test_equal_owners_follow_the_harmonic_closed_form(n) -> None:
    rng = np.random.default_rng(n)
    v = rng.normal(size=(n, 3))
    h = sum(1 / j for j in range(1, n + 1))
    off = (h - 1) / (n - 1) if n > 1 else 0.0
    expected = (h + off) * v - off * v.sum(axis=0)
    got = linear_subset_shapley(v, [7] * n)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.sum(axis=0), v.sum(axis=0), rtol=1e-12)  # efficiency: U(N) = Σ v


def test_two_owners_of_different_sizes_by_hand() -> None:
    v = np.array([[0.3, -0.1], [0.5, 0.2]])
    na, nb = 10, 30
    n = na + nb
    u_a, u_b, u_ab = n / na * v[0], n / nb * v[1], v[0] + v[1]
    expected = np.stack([(u_a + u_ab - u_b) / 2, (u_b + u_ab - u_a) / 2])
    np.testing.assert_allclose(linear_subset_shapley(v, [na, nb]), expected, rtol=1e-12)


def test_background_owners_stay_in_every_coalition() -> None:
    v, rest = np.array([[0.4]]), np.array([0.9])
    na, nr = 5, 15
    n = na + nr
    expected = n / (na + nr) * (v[0] + rest) - n / nr * rest  # v({a}) = U({a} ∪ R) − U(R)
    np.testing.assert_allclose(linear_subset_shapley(v, [na], rest, nr), [expected], rtol=1e-12)


def test_all_orders_as_permutations_equal_exact() -> None:
    rng = np.random.default_rng(0)
    v, sizes = rng.normal(size=(3, 2)), [4, 9, 2]
    orders = list(itertools.permutations(range(3)))
    np.testing.assert_allclose(linear_subset_shapley(v, sizes, permutations=orders), linear_subset_shapley(v, sizes), rtol=1e-12)


def test_it_is_the_shapley_value_of_full_batch_retraining_on_a_linear_loss() -> None:
    """The derivation, simulated: a target loss linear in the weights, per-image training
    gradients fixed, full-batch gradient descent. The run credits each image its
    (η/N)·⟨∇ℓ_T, ∇ℓ(z)⟩ per step; retraining coalition C for the same steps on its images
    alone is then exactly linear, and its exact Shapley values must be the map's."""
    rng = np.random.default_rng(3)
    sizes, steps, lr, dim = [3, 5, 2, 6], 20, 0.01, 8
    owner = np.repeat(np.arange(len(sizes)), sizes)
    grads = rng.normal(size=(len(owner), dim))  # ∇ℓ(z), constant: the training loss is linear too
    target_grads = rng.normal(size=(2, dim))  # two targets, ℓ_T,k(w) = ⟨a_k, w⟩

    def retrain(members: frozenset) -> np.ndarray:
        rows = np.isin(owner, list(members))
        w = np.zeros(dim)
        for _ in range(steps):
            w -= lr * grads[rows].mean(axis=0) if rows.any() else 0.0
        return -(target_grads @ w)  # loss(base) − loss(after): the base is w = 0

    players = list(range(len(sizes)))
    table = {c: retrain(c) for c in all_coalitions(players)}
    truth = exact_shapley(players, table)
    in_run = np.stack([steps * lr / len(owner) * (target_grads @ grads[owner == o].sum(axis=0)) for o in players])
    np.testing.assert_allclose(linear_subset_shapley(in_run, sizes), np.stack([truth[o] for o in players]), rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"in_run": np.zeros((2, 3)), "images": [1]},  # one count per player
        {"in_run": np.zeros(3), "images": [1]},  # not [players, targets]
        {"in_run": np.zeros((1, 3)), "images": [0]},  # an owner with no images
        {"in_run": np.zeros((1, 3)), "images": [1], "background": np.zeros(3)},  # background without its images
    ],
)
def test_bad_arguments_are_refused(kwargs) -> None:
    with pytest.raises(ValueError):
        linear_subset_shapley(**kwargs)
