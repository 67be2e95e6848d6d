"""values.parquet as a table: one row per training sample × target, sample-major (docs/design.md §4)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from royalty.attribution.contract.run_folder import SPECIFIC_COLUMN, STEP_COLUMNS

if TYPE_CHECKING:
    from royalty.attribution.engine.window import CreditWindow
    from royalty.attribution.training.config import TrainConfig


def values_frame(
    sample_ids: Sequence[str],
    owners: Sequence[str],
    target_ids: Sequence[str],
    first: torch.Tensor,
    second: torch.Tensor,
    reference: torch.Tensor | None,
) -> pd.DataFrame:
    """`first`/`second`: [n, k] run sums; `reference`: [n] each sample's value for R, or None."""
    n, k = len(sample_ids), len(target_ids)
    total = first + second
    frame = pd.DataFrame({
        "sample_id": np.repeat(np.array(sample_ids, dtype=object), k),
        "owner": np.repeat(np.array(owners, dtype=object), k),
        "target_id": np.tile(np.array(target_ids, dtype=object), n),
        "value": total.reshape(-1).numpy(),
        "value_first_order": first.reshape(-1).numpy(),
        "value_second_order": second.reshape(-1).numpy(),
    })
    if reference is not None:
        frame[SPECIFIC_COLUMN] = (total - reference.reshape(n, 1)).reshape(-1).numpy()
    return frame


def steps_frame(log: Sequence[dict[str, float]]) -> pd.DataFrame:
    """steps.parquet from the step log: the unattributed parts summed, the residual what is left.

    residual = (before − after) − value_sum − unattributed, so the ledger adds up row by
    row by construction; what it measures is how much no term explains (higher orders,
    the float32 arithmetic of the step itself).
    """
    frame = pd.DataFrame(list(log), columns=[c for c in STEP_COLUMNS if c not in ("unattributed", "residual")])
    frame["unattributed"] = frame["unattributed_decay"] + frame["unattributed_carried"] + frame["unattributed_beyond"]
    change = frame["target_loss_before"] - frame["target_loss_after"]
    frame["residual"] = change - frame["value_sum"] - frame["unattributed"]
    return frame[list(STEP_COLUMNS)].astype({"step": "int64"})


def ledger_totals(steps: pd.DataFrame, cfg: "TrainConfig", window: "CreditWindow | None") -> dict[str, object]:
    """run.json's `ledger`: the run's totals of steps.parquet and how the values were credited."""
    change = steps["target_loss_before"] - steps["target_loss_after"]

    def total(column: pd.Series) -> float | None:
        return None if column.isna().any() else float(column.sum())

    return {
        "credit": "applied" if cfg.applied_credit else "own-step",
        # own-step credit under AdamW computes no unattributed terms (NaN in steps.parquet)
        "exact": not steps["unattributed"].isna().any(),
        "window_steps": window.length if window is not None else None,
        # both schemes credit the same amounts (engine/window.py); which one ran, for the record
        "window_scheme": None if window is None else ("accumulated" if window.accumulate else "direct"),
        # how the second-order term took the curvature along each step (None: first order only)
        "curvature": cfg.curvature if cfg.order == 2 else None,
        "measured_change": total(change),
        "value_sum": total(steps["value_sum"]),
        "unattributed": total(steps["unattributed"]),
        "unattributed_decay": total(steps["unattributed_decay"]),
        "unattributed_carried": total(steps["unattributed_carried"]),
        "unattributed_beyond": total(steps["unattributed_beyond"]),
        "residual": total(steps["residual"]),
    }
