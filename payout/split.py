"""Turning owner values into minor units: per total (--revenue) or per sale (--sales).

Policy (DESIGN.md §3): sum values per owner exactly, clip each owner at 0, split in
proportion to what is left by largest remainder. When nobody is positive the policy's
on_no_positive rule decides: fail, or split equally among the owners concerned.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from royalty.errors import DataError
from royalty.payout.allocate import largest_remainder, largest_remainder_many
from royalty.payout.exact import exact_group_sums, fraction_of
from royalty.payout.ledger import Ledger, Sale
from royalty.payout.policy import OnNoPositive, PayoutPolicy
from royalty.payout.values import RunValues

RULE_VALUE = "value"
RULE_EQUAL = "equal"

# Sales-mode shares are a weighted sum of per-target ratios with unrelated big
# denominators; they are shown to 10 significant digits, so 40 decimal digits of
# integer precision per term is far more than enough and keeps the arithmetic small.
_SHARE_PRECISION = 10**40


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


def _weights(numerators: list[int], policy: PayoutPolicy, what: str) -> tuple[list[int], str]:
    clipped = [n if n > 0 else 0 for n in numerators]
    if any(clipped):
        return clipped, RULE_VALUE
    if policy.on_no_positive is OnNoPositive.EQUAL:
        return [1] * len(numerators), RULE_EQUAL
    raise DataError(
        f"no owner has a positive value {what} (basis {policy.basis.value}); nothing can be split "
        "by value — pass --on-no-positive equal to split equally among the owners"
    )


def split_revenue(values: RunValues, revenue: int, policy: PayoutPolicy) -> Split:
    """One total over all targets: each owner's value is the sum of all its rows."""
    n = len(values.owners)
    sums = exact_group_sums(values.owner_codes, values.values, n)
    weights, rule = _weights(list(sums.numerators), policy, "summed over all targets")
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
    n_owners = len(values.owners)
    n_targets = len(values.targets)
    groups = values.target_codes * n_owners + values.owner_codes
    sums = exact_group_sums(groups, values.values, n_targets * n_owners)
    present = np.bincount(groups, minlength=n_targets * n_owners).reshape(n_targets, n_owners) > 0
    target_index = {t: i for i, t in enumerate(values.targets)}

    per_target: dict[int, tuple[list[int], list[int], str]] = {}  # t → (owner idx, weights, rule)
    sold: dict[int, int] = {}  # t → Σ sale amounts
    for sale in ledger.sales:
        t = target_index[sale.target_id]
        sold[t] = sold.get(t, 0) + sale.amount
        if t in per_target:
            continue
        idx = [int(i) for i in np.flatnonzero(present[t])]
        nums = [sums.numerators[t * n_owners + i] for i in idx]
        try:
            weights, rule = _weights(nums, policy, f"for target {sale.target_id!r}")
        except DataError as exc:
            raise DataError(f"sale {sale.sale_id!r} (line {sale.line}): {exc}") from exc
        per_target[t] = (idx, weights, rule)

    allocated = [0] * n_owners
    weighted = [False] * n_owners
    # All sales of one target share its weights: allocate them together, one row each.
    by_target: dict[int, list[int]] = {}
    for k, sale in enumerate(ledger.sales):
        by_target.setdefault(target_index[sale.target_id], []).append(k)
    rows_of: dict[int, tuple[int, np.ndarray]] = {}  # sale index → (target, amounts row)
    for t, sale_indices in by_target.items():
        idx, weights, _ = per_target[t]
        table = largest_remainder_many(
            [ledger.sales[k].amount for k in sale_indices], [values.owners[i] for i in idx], weights
        )
        for i, total in zip(idx, table.sum(axis=0, dtype=object).tolist()):
            allocated[i] += int(total)
        if detail:
            for k, row in zip(sale_indices, table):
                rows_of[k] = (t, row)

    details: list[SaleSplit] = []
    for k, sale in enumerate(ledger.sales if detail else ()):
        t, row = rows_of[k]
        idx, weights, rule = per_target[t]
        total = sum(weights)
        details.append(
            SaleSplit(
                sale,
                rule,
                tuple(
                    SaleLine(
                        values.owners[i],
                        fraction_of(sums.numerators[t * n_owners + i], sums.scale),
                        Fraction(w, total),
                        int(a),
                    )
                    for i, w, a in zip(idx, weights, row.tolist())
                    if w > 0
                ),
            )
        )

    revenue = sum(sold.values())
    share_num = [0] * n_owners
    value_num = [0] * n_owners
    for t, amount in sold.items():
        idx, weights, _ = per_target[t]
        total = sum(weights)
        for i, w in zip(idx, weights):
            if w > 0:
                weighted[i] = True
                share_num[i] += amount * w * _SHARE_PRECISION // total
            value_num[i] += sums.numerators[t * n_owners + i]
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
    equal = tuple(sorted(values.targets[t] for t, (_, _, rule) in per_target.items() if rule == RULE_EQUAL))
    return Split(revenue, owners, len(sold), equal, tuple(details))
