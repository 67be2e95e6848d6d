"""Turning owner values into minor units: per total (--revenue) or per sale (--sales).

Policy (docs/design.md §3): sum values per owner exactly, clip each owner at 0,
split in proportion to what is left by largest remainder. When nobody is positive the
policy's on_no_positive rule decides: fail, or split equally among the owners concerned.
A sum indistinguishable from rounding is refused before anything is split (noise.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from royalty.errors import DataError
from royalty.payout.allocate import largest_remainder, largest_remainder_many
from royalty.payout.exact import exact_group_sums, fraction_of
from royalty.payout.ledger import Ledger, Sale
from royalty.payout.noise import refuse_noise
from royalty.payout.policy import OnNoPositive, PayoutPolicy
from royalty.payout.values import RunValues

RULE_VALUE = "value"
RULE_EQUAL = "equal"

# Sales-mode shares are a weighted sum of per-target ratios with unrelated big
# denominators; they are shown to 10 significant digits, so 40 decimal digits of
# integer precision per term is far more than enough and keeps the arithmetic small.
_SHARE_PRECISION = 10**40
_LISTED = 5  # targets named in an error; the count says how many more


@dataclass(frozen=True)
class OwnerSplit:
    owner: str
    images: int
    value: Fraction  # exact Σ of the owner's values over the targets paid for
    share: Fraction  # fraction of the revenue owed before rounding to minor units
    allocated: int  # minor units by largest remainder, before any minimum payout
    weighted: bool  # the owner took part in at least one split (positive or equal rule)


@dataclass(frozen=True)
class SaleLine:
    owner: str
    value: Fraction
    share: Fraction
    amount: int


@dataclass(frozen=True)
class SaleSplit:
    sale: Sale
    rule: str
    lines: tuple[SaleLine, ...]


@dataclass(frozen=True)
class Split:
    revenue: int
    owners: tuple[OwnerSplit, ...]
    targets_paid: int
    equal_rule_targets: tuple[str, ...]  # targets (or "*" for the total) split equally
    sales: tuple[SaleSplit, ...]


def _weights(numerators: list[int], policy: PayoutPolicy) -> tuple[list[int] | None, str]:
    """The clipped weights and their rule; None when nobody is positive and the policy fails."""
    clipped = [n if n > 0 else 0 for n in numerators]
    if any(clipped):
        return clipped, RULE_VALUE
    if policy.on_no_positive is OnNoPositive.EQUAL:
        return [1] * len(numerators), RULE_EQUAL
    return None, RULE_VALUE


def _no_positive_message(what: str, policy: PayoutPolicy) -> str:
    return (
        f"no owner has a positive value {what} (basis {policy.basis.value}); nothing can be split "
        "by value — pass --on-no-positive equal to split equally among the owners"
    )


def split_revenue(values: RunValues, revenue: int, policy: PayoutPolicy) -> Split:
    """One total: pooled over all targets, or per target when the policy says so.

    Pooled (basis raw): each owner's value is the sum of all its rows. Per target (basis
    specific): the revenue is cut into equal parts, one per target, and each part is
    split by that target's own owner values — the split a ledger of one equal sale per
    target would get. A specific value is measured against a reference, and with the
    default reference (the mean over the targets) each owner's sum over all targets is 0
    by construction: pooled, it would pay by rounding noise.
    """
    if policy.per_target:
        parts = largest_remainder(revenue, values.targets, [1] * len(values.targets))
        amounts = {t: [a] for t, a in enumerate(parts) if a > 0}
        return _split_targets(values, amounts, policy, lambda t: f"target {values.targets[t]!r}", False)[0]
    n = len(values.owners)
    sums = exact_group_sums(values.owner_codes, values.values, n)
    refuse_noise(
        values.owner_codes, values.values, sums, list(range(n)),
        lambda g: f"owner {values.owners[g]!r} over all targets", values.column,
    )
    weights, rule = _weights(list(sums.numerators), policy)
    if weights is None:
        raise DataError(_no_positive_message("summed over all targets", policy))
    amounts = largest_remainder(revenue, values.owners, weights)
    total = sum(weights)
    owners = tuple(
        OwnerSplit(
            owner=values.owners[i],
            images=values.images[i],
            value=sums.fraction(i),
            share=Fraction(weights[i], total),
            allocated=amounts[i],
            weighted=weights[i] > 0,
        )
        for i in range(n)
    )
    return Split(revenue, owners, len(values.targets), ("*",) if rule == RULE_EQUAL else (), ())


def split_sales(values: RunValues, ledger: Ledger, policy: PayoutPolicy, detail: bool = False) -> Split:
    """Each sale split by the owner values for its own target, then summed per owner."""
    target_index = {t: i for i, t in enumerate(values.targets)}
    amounts: dict[int, list[int]] = {}
    first_sale: dict[int, Sale] = {}
    for sale in ledger.sales:
        t = target_index[sale.target_id]
        amounts.setdefault(t, []).append(sale.amount)
        first_sale.setdefault(t, sale)

    def label(t: int) -> str:
        sale = first_sale[t]
        return f"sale {sale.sale_id!r} (line {sale.line}), target {values.targets[t]!r}"

    split, lines = _split_targets(values, amounts, policy, label, detail)
    if not detail:
        return split
    # Each target's lines come in the ledger order of its sales.
    queues = {t: iter(rows) for t, rows in lines.items()}
    details = tuple(SaleSplit(sale, *next(queues[target_index[sale.target_id]])) for sale in ledger.sales)
    return Split(split.revenue, split.owners, split.targets_paid, split.equal_rule_targets, details)


@dataclass(frozen=True)
class _TargetWeights:
    owners: list[int]  # owner indices with rows for the target
    weights: list[int]
    rule: str


def _split_targets(
    values: RunValues,
    amounts: dict[int, list[int]],
    policy: PayoutPolicy,
    label: Callable[[int], str],
    detail: bool,
) -> tuple[Split, dict[int, list[tuple[str, tuple[SaleLine, ...]]]]]:
    """Split each amount of target t by t's own clipped owner values; sum per owner.

    `amounts`: target index → the amounts earned by that target (sales, or one equal
    part of a revenue). With `detail`, also each amount's (rule, lines) per target.
    """
    n_owners = len(values.owners)
    n_targets = len(values.targets)
    groups = values.target_codes * n_owners + values.owner_codes
    sums = exact_group_sums(groups, values.values, n_targets * n_owners)
    present = np.bincount(groups, minlength=n_targets * n_owners).reshape(n_targets, n_owners) > 0
    refuse_noise(
        groups, values.values, sums,
        [t * n_owners + i for t in sorted(amounts) for i in np.flatnonzero(present[t]).tolist()],
        lambda g: f"owner {values.owners[g % n_owners]!r} for {label(g // n_owners)}", values.column,
    )

    per_target: dict[int, _TargetWeights] = {}
    failed: list[int] = []
    for t in amounts:
        idx = np.flatnonzero(present[t]).tolist()
        weights, rule = _weights([sums.numerators[t * n_owners + i] for i in idx], policy)
        if weights is None:
            failed.append(t)
        else:
            per_target[t] = _TargetWeights(idx, weights, rule)
    if failed:
        named = ", ".join(label(t) for t in failed[:_LISTED])
        more = f" and {len(failed) - _LISTED} more" if len(failed) > _LISTED else ""
        raise DataError(_no_positive_message(f"for {len(failed)} of {len(amounts)} targets ({named}{more})", policy))

    allocated = [0] * n_owners
    weighted = [False] * n_owners
    share_num = [0] * n_owners
    value_num = [0] * n_owners
    lines: dict[int, list[tuple[str, tuple[SaleLine, ...]]]] = {}
    for t, earned in amounts.items():
        tw = per_target[t]
        # All amounts of one target share its weights: allocate them together, one row each.
        table = largest_remainder_many(earned, [values.owners[i] for i in tw.owners], tw.weights)
        total = sum(tw.weights)
        for i, w, paid in zip(tw.owners, tw.weights, table.sum(axis=0, dtype=object).tolist()):
            allocated[i] += int(paid)
            value_num[i] += sums.numerators[t * n_owners + i]
            if w > 0:
                weighted[i] = True
                share_num[i] += sum(earned) * w * _SHARE_PRECISION // total
        if detail:
            values_of = [fraction_of(sums.numerators[t * n_owners + i], sums.scale) for i in tw.owners]
            lines[t] = [(tw.rule, _sale_lines(values.owners, tw, values_of, row.tolist())) for row in table]

    revenue = sum(sum(earned) for earned in amounts.values())
    owners = tuple(
        OwnerSplit(
            owner=values.owners[i],
            images=values.images[i],
            value=fraction_of(value_num[i], sums.scale),
            share=Fraction(share_num[i], revenue * _SHARE_PRECISION) if revenue else Fraction(0),
            allocated=allocated[i],
            weighted=weighted[i],
        )
        for i in range(n_owners)
    )
    equal = tuple(sorted(values.targets[t] for t, tw in per_target.items() if tw.rule == RULE_EQUAL))
    return Split(revenue, owners, len(amounts), equal, ()), lines


def _sale_lines(owners: tuple[str, ...], tw: _TargetWeights, values_of: list[Fraction], amounts: list[int]) -> tuple[SaleLine, ...]:
    """One sale's lines: the owners its target's weights pay, with their value, share and amount."""
    total = sum(tw.weights)
    return tuple(
        SaleLine(owners[i], v, Fraction(w, total), int(a))
        for i, w, v, a in zip(tw.owners, tw.weights, values_of, amounts)
        if w > 0
    )
