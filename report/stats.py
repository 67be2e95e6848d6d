"""The numbers a report shows, from a validated values table and the steps table.

The overall shares are computed by payout's own split (`royalty.payout.split`), so they
are the shares `royalty payout --revenue` pays with the same basis, and the report says
so when payout would refuse. Per-target shares follow the same rule for one target:
exact owner sums, clipped at 0, share = clipped / Σ clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pyarrow as pa

from royalty.errors import DataError
from royalty.payout.exact import exact_group_sums
from royalty.payout.policy import Basis, PayoutPolicy
from royalty.payout.split import split_revenue
from royalty.payout.values import RunValues
from royalty.report.load import Values

HIST_BINS = 30


@dataclass(frozen=True)
class OwnerShare:
    owner: str
    images: int
    value: float  # exact Σ of the owner's values, rounded once
    share: float  # clipped / Σ clipped; 0 for owners at or below 0

    @property
    def paid(self) -> bool:
        return self.share > 0


@dataclass(frozen=True)
class Contributor:
    sample_id: str
    owner: str
    value: float


@dataclass(frozen=True)
class Histogram:
    edges: tuple[float, ...]
    counts: tuple[int, ...]


@dataclass(frozen=True)
class TargetStats:
    target_id: str
    shares: tuple[OwnerShare, ...]  # every owner, sorted by share then value, descending
    top: tuple[Contributor, ...]
    histogram: Histogram
    rows: int
    positive_rows: int

    @property
    def top_owner(self) -> str | None:
        """The owner paid most for this target; None when no owner is positive."""
        return self.shares[0].owner if self.shares and self.shares[0].share > 0 else None


@dataclass(frozen=True)
class Efficiency:
    """Per step: Σ values (value_sum) against the target-loss change it should account for."""

    steps: np.ndarray
    value_sum: np.ndarray
    actual: np.ndarray  # target_loss_before − target_loss_after; NaN where not measured
    measured: np.ndarray  # bool: both sides finite
    # the ledger's other terms (docs/design.md §1.6); None: a run recorded before the
    # ledger, or one whose unattributed parts were not computed (own-step AdamW credit)
    unattributed: np.ndarray | None = None
    residual: np.ndarray | None = None

    @property
    def n_measured(self) -> int:
        return int(self.measured.sum())

    @property
    def total_value(self) -> float:
        return float(self.value_sum[self.measured].sum())

    @property
    def total_actual(self) -> float:
        return float(self.actual[self.measured].sum())

    @property
    def correlation(self) -> float | None:
        """Pearson r of the two per-step series over measured steps (None below 3 steps)."""
        x, y = self.value_sum[self.measured], self.actual[self.measured]
        if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
            return None
        return float(np.corrcoef(x, y)[0, 1])

    @property
    def total_unattributed(self) -> float | None:
        return None if self.unattributed is None else float(self.unattributed[self.measured].sum())

    @property
    def total_residual(self) -> float | None:
        return None if self.residual is None else float(self.residual[self.measured].sum())

    @property
    def accounted_correlation(self) -> float | None:
        """Pearson r of value_sum + unattributed against the measured change (None without a ledger)."""
        if self.unattributed is None:
            return None
        x, y = (self.value_sum + self.unattributed)[self.measured], self.actual[self.measured]
        if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
            return None
        return float(np.corrcoef(x, y)[0, 1])

    def cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps and running sums of both sides over the measured steps only."""
        m = self.measured
        return self.steps[m], np.cumsum(self.value_sum[m]), np.cumsum(self.actual[m])


@dataclass(frozen=True)
class Overall:
    """The split `royalty payout --revenue` makes with this basis, or why it refuses one."""

    shares: tuple[OwnerShare, ...]  # every owner; all shares 0 when refused
    refusal: str | None


def overall_shares(coded: RunValues, basis: Basis) -> Overall:
    # Equal parts of K · 10^15 minor units per target: the per-target split's shares are
    # then exact ratios, independent of how a real revenue rounds over the targets.
    revenue = len(coded.targets) * 10**15
    try:
        split = split_revenue(coded, revenue, PayoutPolicy(basis=basis))
    except DataError as exc:
        sums = exact_group_sums(coded.owner_codes, coded.values, len(coded.owners))
        shares = tuple(
            OwnerShare(owner, coded.images[g], float(sums.fraction(g)), 0.0) for g, owner in enumerate(coded.owners)
        )
        return Overall(tuple(sorted(shares, key=lambda s: (-s.value, s.owner))), str(exc))
    shares = tuple(OwnerShare(o.owner, o.images, float(o.value), float(o.share)) for o in split.owners)
    return Overall(tuple(sorted(shares, key=lambda s: (-s.share, -s.value, s.owner))), None)


def _shares(exact: list[Fraction], owners: tuple[str, ...], images: tuple[int, ...]) -> tuple[OwnerShare, ...]:
    clipped = [v if v > 0 else Fraction(0) for v in exact]
    total = sum(clipped, Fraction(0))
    shares = [
        OwnerShare(owner, images[g], float(exact[g]), float(clipped[g] / total) if total > 0 else 0.0)
        for g, owner in enumerate(owners)
    ]
    return tuple(sorted(shares, key=lambda s: (-s.share, -s.value, s.owner)))


def target_stats(values: Values, target_ids: list[str], top_n: int) -> list[TargetStats]:
    """Shares, top contributors and histogram for each named target (in that order)."""
    coded = values.coded
    index = {t: i for i, t in enumerate(coded.targets)}
    wanted = np.array([index[t] for t in target_ids], dtype=np.int64)
    local = np.full(len(coded.targets), -1, dtype=np.int64)
    local[wanted] = np.arange(len(wanted))
    rows = np.flatnonzero(local[coded.target_codes] >= 0)
    n_owners = len(coded.owners)
    # One exact pass for all shown targets: group = (shown target, owner).
    groups = local[coded.target_codes[rows]] * n_owners + coded.owner_codes[rows]
    sums = exact_group_sums(groups, coded.values[rows], len(wanted) * n_owners)
    # Row order within a target: value descending, then sample_id ascending (stable, deterministic).
    order = rows[np.lexsort((values.sample_ids[rows], -coded.values[rows], local[coded.target_codes[rows]]))]
    bounds = np.searchsorted(local[coded.target_codes[order]], np.arange(len(wanted) + 1))
    out = []
    for k, target in enumerate(target_ids):
        mine = order[bounds[k] : bounds[k + 1]]
        exact = [sums.fraction(k * n_owners + g) for g in range(n_owners)]
        vals = coded.values[mine]
        out.append(
            TargetStats(
                target_id=target,
                shares=_shares(exact, coded.owners, coded.images),
                top=tuple(
                    Contributor(str(values.sample_ids[i]), coded.owners[coded.owner_codes[i]], float(coded.values[i]))
                    for i in mine[:top_n]
                ),
                histogram=histogram(vals),
                rows=len(mine),
                positive_rows=int((vals > 0).sum()),
            )
        )
    return out


def top_owner_per_target(values: Values) -> dict[str, str | None]:
    """For every target, the owner with the largest summed value (None if none is positive).

    Float sums suffice here: this only names a winner for the accuracy count.
    """
    coded = values.coded
    n_owners = len(coded.owners)
    sums = np.bincount(
        coded.target_codes * n_owners + coded.owner_codes, weights=coded.values, minlength=len(coded.targets) * n_owners
    ).reshape(len(coded.targets), n_owners)
    best = np.argmax(sums, axis=1)  # ties: the first, i.e. the owner that sorts first
    return {
        t: coded.owners[best[i]] if sums[i, best[i]] > 0 else None for i, t in enumerate(coded.targets)
    }


def histogram(values: np.ndarray, bins: int = HIST_BINS) -> Histogram:
    if len(values) == 0:
        return Histogram((0.0, 1.0), (0,))
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 0.5 * (abs(lo) or 1.0), hi + 0.5 * (abs(hi) or 1.0)
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return Histogram(tuple(float(e) for e in edges), tuple(int(c) for c in counts))


def efficiency(steps: pa.Table) -> Efficiency:
    def col(name: str) -> np.ndarray:
        return np.asarray(steps.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)

    value_sum = col("value_sum")
    actual = col("target_loss_before") - col("target_loss_after")
    measured = np.isfinite(value_sum) & np.isfinite(actual)
    ledger = "unattributed" in steps.column_names and "residual" in steps.column_names
    unattributed = col("unattributed") if ledger else None
    if unattributed is not None and not np.isfinite(unattributed[measured]).all():
        unattributed = None  # not computed for this run
    return Efficiency(
        steps=np.asarray(steps.column("step").to_numpy(zero_copy_only=False), dtype=np.int64),
        value_sum=value_sum,
        actual=actual,
        measured=measured,
        unattributed=unattributed,
        residual=col("residual") if unattributed is not None else None,
    )
