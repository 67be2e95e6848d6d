"""Owner accuracy: how often each basis puts a target's true owner on top.

A targets folder may name each target's owner (`owner` column: the one house whose style
the target shows; empty for a blend). For the targets whose owner is one of the audited
players, each basis — in-run values, retraining Shapley, leave-one-out — names the player
with the largest value as the target's top owner; this counts how often that is the true
one. Retraining Shapley is the ground truth the in-run values approximate: if it does not
put the style's owner on top, no attribution of the run can. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def owner_accuracy(
    players: Sequence[str], true_owners: Sequence[str], bases: Mapping[str, np.ndarray]
) -> dict[str, Any] | None:
    """`bases`: name → [players, targets] values. None when no target names an audited owner.

    Ties go to the first player in `players` order (numpy's argmax), as everywhere in the audit.
    """
    index = {p: i for i, p in enumerate(players)}
    known = [j for j, owner in enumerate(true_owners) if owner in index]
    if not known:
        return None
    truth = np.array([index[true_owners[j]] for j in known])
    out: dict[str, Any] = {"targets": len(known), "by_basis": {}}
    for name, table in bases.items():
        table = np.asarray(table, dtype=np.float64)
        if table.shape != (len(players), len(true_owners)):
            raise ValueError(f"{name}: expected a [{len(players)} players, {len(true_owners)} targets] table, got {table.shape}")
        hits = int((table[:, known].argmax(axis=0) == truth).sum())
        out["by_basis"][name] = {"hits": hits, "share": hits / len(known)}
    return out
