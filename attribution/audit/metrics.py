"""How well two owner × target value tables agree, and the run's efficiency trace.

Pure numpy/pandas. A table is an array [owners, targets]; both tables list owners and
targets in the same order. Shares follow payout's rule (docs/design.md §3.2): clip each owner at
0 and normalise; a target where no owner is positive is split equally (what
`payout --on-no-positive equal` pays), so the distance is always defined.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd


def ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean of their positions), 0-based."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), dtype=np.float64)
    r[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            r[tied] = r[tied].mean()
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's ρ; NaN when either side is constant (no order to agree on)."""
    ra, rb = ranks(a), ranks(b)
    return pearson(ra, rb)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else float("nan")


def shares(values: np.ndarray) -> np.ndarray:
    """Payout's split of one target: clipped at 0, normalised; equal if none is positive."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = clipped.sum()
    return clipped / total if total > 0 else np.full(len(clipped), 1.0 / len(clipped))


def l1_share_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Σ |share_a − share_b| over owners: 0 (same split) … 2 (disjoint payees)."""
    return float(np.abs(shares(a) - shares(b)).sum())


def agreement(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Per-target agreement of tables a and b [owners, targets], averaged; and on the totals."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"tables must be [owners, targets] of one shape, got {a.shape} and {b.shape}")
    rho = [spearman(a[:, k], b[:, k]) for k in range(a.shape[1])]
    defined = [r for r in rho if not math.isnan(r)]
    totals_a, totals_b = a.sum(axis=1), b.sum(axis=1)
    return {
        "spearman_mean": _num(np.mean(defined)) if defined else None,
        "spearman_targets": len(defined),  # targets where both sides order the owners
        "sign_agreement": _num(np.mean(np.sign(a) == np.sign(b))),
        "l1_share_distance": _num(np.mean([l1_share_distance(a[:, k], b[:, k]) for k in range(a.shape[1])])),
        "top_owner_agreement": _num(np.mean(np.argmax(a, axis=0) == np.argmax(b, axis=0))),
        "overall": {  # owners' totals over all targets: what `payout --revenue` pays
            "spearman": _num(spearman(totals_a, totals_b)),
            "l1_share_distance": _num(l1_share_distance(totals_a, totals_b)),
            "top_owner_agrees": bool(np.argmax(totals_a) == np.argmax(totals_b)),
        },
    }


def mean_agreement(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Field-wise mean of several `agreement` results (over seeds, or over seed pairs)."""
    if not items:
        return None

    def avg(values: list) -> float | None:
        values = [float(v) for v in values if v is not None]
        return _num(np.mean(values)) if values else None

    keys = ("spearman_mean", "sign_agreement", "l1_share_distance", "top_owner_agreement")
    out: dict[str, Any] = {k: avg([i[k] for i in items]) for k in keys}
    out["spearman_targets"] = min(i["spearman_targets"] for i in items)
    out["overall"] = {
        "spearman": avg([i["overall"]["spearman"] for i in items]),
        "l1_share_distance": avg([i["overall"]["l1_share_distance"] for i in items]),
        "top_owner_agrees": avg([float(i["overall"]["top_owner_agrees"]) for i in items]),
    }
    out["of"] = len(items)
    return out


def efficiency_trace(steps: pd.DataFrame) -> dict[str, Any]:
    """Σ values per step (value_sum) against the measured target-loss change, per step and summed.

    The run records the mean over targets of both sides at every step (steps.parquet);
    for the exact estimator the loss after step t is the loss before step t+1.
    """
    before = steps["target_loss_before"].to_numpy(dtype=np.float64)
    after = steps["target_loss_after"].to_numpy(dtype=np.float64)
    if np.isnan(after).any() and len(before) > 1:
        after = np.where(np.isnan(after), np.append(before[1:], np.nan), after)
    change = before - after
    value_sum = steps["value_sum"].to_numpy(dtype=np.float64)
    ok = ~(np.isnan(change) | np.isnan(value_sum))
    total_values, total_change = float(value_sum[ok].sum()), float(change[ok].sum())
    return {
        "steps": steps["step"].astype(int).tolist(),
        "value_sum": [_num(v) for v in value_sum],
        "loss_change": [_num(v) for v in change],
        "cumulative_value_sum": [_num(v) for v in np.cumsum(np.where(ok, value_sum, 0.0))],
        "cumulative_loss_change": [_num(v) for v in np.cumsum(np.where(ok, change, 0.0))],
        "per_step_pearson": _num(pearson(value_sum[ok], change[ok])) if ok.sum() > 1 else None,
        "per_step_sign_agreement": _num(np.mean(np.sign(value_sum[ok]) == np.sign(change[ok]))) if ok.any() else None,
        "total_value_sum": _num(total_values),
        "total_loss_change": _num(total_change),
        # the share of the measured change the values do not account for
        "relative_gap": _num((total_values - total_change) / abs(total_change)) if total_change else None,
    }


def _num(x: float) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x
