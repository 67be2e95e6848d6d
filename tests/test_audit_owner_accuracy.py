"""attribution/audit/owner_accuracy: each basis's top owner against the targets' named owner."""

from __future__ import annotations

import numpy as np
import pytest

from royalty.attribution.audit.owner_accuracy import owner_accuracy

PLAYERS = ("ann", "bob", "cy")


def test_counts_the_targets_whose_top_owner_is_their_named_owner() -> None:
    # targets: ann's, bob's, a blend (no owner), cy's
    truth = ("ann", "bob", "", "cy")
    good = np.array([[3.0, 0.0, 9.0, 0.0], [1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 0.0, 5.0]])
    bad = -good
    got = owner_accuracy(PLAYERS, truth, {"good": good, "bad": bad})
    assert got == {"targets": 3, "by_basis": {"good": {"hits": 3, "share": 1.0}, "bad": {"hits": 0, "share": 0.0}}}


def test_a_target_whose_owner_is_not_audited_does_not_count() -> None:
    # --owners 2: cy is background, so cy's target cannot have cy on top
    got = owner_accuracy(("ann", "bob"), ("ann", "cy"), {"v": np.array([[1.0, 1.0], [0.0, 2.0]])})
    assert got == {"targets": 1, "by_basis": {"v": {"hits": 1, "share": 1.0}}}


def test_ties_go_to_the_first_player() -> None:
    table = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
    got = owner_accuracy(PLAYERS, ("ann", "bob"), {"tie": table})
    assert got["by_basis"]["tie"]["hits"] == 1


def test_no_named_owner_means_no_accuracy() -> None:
    assert owner_accuracy(PLAYERS, ("", ""), {"v": np.zeros((3, 2))}) is None


def test_a_table_of_the_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a \[3 players, 2 targets\] table"):
        owner_accuracy(PLAYERS, ("ann", "bob"), {"v": np.zeros((2, 3))})
