"""The subset game in the small-step limit: its Shapley values, predicted from in-run values.

Retraining a coalition C on its images alone fills every batch from C's n_C images. While
steps are small enough for the target loss to be linear in them, that retraining lowers
a target's loss by η Σ_t ⟨P ∇ℓ_T, ḡ_C⟩, ḡ_C the mean gradient over C's images, whereas
the run, where all N images share the batches, credits owner o with
v_o = η Σ_t ⟨P ∇ℓ_T, Σ_{z ∈ o} ∇ℓ(z)⟩ / N. So

    U(C) = (N / n_C) · Σ_{o ∈ C} v_o

a coalition earns the image-weighted *mean* of its members' contributions, not their
sum: one owner alone trains on its own images N / n_o times as often as in the run. The
Shapley values of this game are a linear map of the in-run values; for n owners of
equal size, φ_o = (H + (H − 1)/(n − 1)) · v_o − (H − 1)/(n − 1) · Σ v with H the n-th
harmonic number (2.44 v_o − 0.36 Σ v for 4 owners): the owners' order kept, their
differences stretched. So even exact in-run values, at small learning rates, are not
retraining Shapley's numbers: the audit compares both the values themselves and
their image under this map (docs/design.md §1.2 defines v; BENCHMARKS.md, fidelity, measures
where the linear regime holds).

Background owners (`royalty audit --owners N`) stay in every coalition: v(S) =
U(S ∪ R) − U(R), as in the retraining game.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from royalty.attribution.audit.shapley import all_coalitions, exact_shapley, permutation_shapley


def linear_subset_shapley(
    in_run: np.ndarray,
    images: Sequence[int],
    background: np.ndarray | None = None,
    background_images: int = 0,
    permutations: Sequence[Sequence[int]] = (),
) -> np.ndarray:
    """[players, targets] in-run values → the linear subset game's Shapley values, same shape.

    `images[i]`: player i's number of training images. `background`: the background
    owners' summed in-run values per target, with `background_images` images between
    them. `permutations`: orders of player indices to sample over; empty: exact.
    """
    values = np.asarray(in_run, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] != len(images):
        raise ValueError(f"in_run must be [players, targets] with one image count per player, got {values.shape} and {len(images)}")
    if any(n < 1 for n in images) or background_images < 0:
        raise ValueError(f"image counts must be positive, got {list(images)} and background {background_images}")
    if (background is None) != (background_images == 0):
        raise ValueError("background values and background_images come together")
    rest = np.zeros(values.shape[1]) if background is None else np.asarray(background, dtype=np.float64)
    total_images = sum(images) + background_images

    def gain(members: frozenset) -> np.ndarray:
        """What training on these players' images and the background's alone gains."""
        n = sum(images[i] for i in members) + background_images
        if n == 0:  # nobody's images: the base model itself
            return np.zeros(values.shape[1])
        return total_images / n * (rest + sum((values[i] for i in members), np.zeros(values.shape[1])))

    def utility(coalition: frozenset) -> np.ndarray:
        return gain(coalition) - gain(frozenset())

    players = list(range(len(images)))
    if permutations:
        phi = permutation_shapley(players, permutations, utility).values
    else:
        phi = exact_shapley(players, {c: utility(c) for c in all_coalitions(players)})
    return np.stack([phi[i] for i in players])
