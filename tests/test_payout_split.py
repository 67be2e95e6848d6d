"""Property tests of the split: exact sums, order independence, an independent reference.

Tables are built in memory (no parquet, no subprocess) so hypothesis can try many cases.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from royalty.errors import DataError
from royalty.payout.currency import MINOR_UNITS, currency
from royalty.payout.exact import exact_group_sums
from royalty.payout.ledger import Ledger, Sale
from royalty.payout.policy import Basis, OnNoPositive, PayoutPolicy
from royalty.payout.split import split_revenue, split_sales
from royalty.payout.values import RunValues, values_from_table

Row = tuple[str, str, str, float]  # sample_id, owner, target_id, value

finite = st.one_of(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    st.floats(min_value=-1e-9, max_value=1e-9, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1e-300, 5e-324, 0.1, 0.2, 0.3, 1e15, -1e15]),
)
owner_names = st.sampled_from(["alice", "bob", "carol", "Dave", "émile", "o/1", "o 2", "zed"])


@st.composite
def value_rows(draw: st.DrawFn, max_images: int = 12) -> list[Row]:
    """Every sample has a value for every target, as a real run writes them."""
    n_images = draw(st.integers(1, max_images))
    targets = [f"t{i}" for i in range(draw(st.integers(1, 4)))]
    rows = []
    for i in range(n_images):
        owner = draw(owner_names)
        for t in targets:
            rows.append((f"s{i}", owner, t, draw(finite)))
    return rows


def as_values(rows: list[Row], column: str = "value") -> RunValues:
    cols = list(zip(*rows))
    table = pa.table(
        {"sample_id": list(cols[0]), "owner": list(cols[1]), "target_id": list(cols[2]), column: list(cols[3])}
    )
    return values_from_table(table, column, "test")


def reference_owner_sums(rows: list[Row]) -> dict[str, Fraction]:
    sums: dict[str, Fraction] = {}
    for _, owner, _, v in rows:
        sums[owner] = sums.get(owner, Fraction(0)) + Fraction(v)
    return sums


def reference_split(total: int, values: dict[str, Fraction]) -> dict[str, int]:
    """docs/design.md §3.2–3.3 spelled out slowly with rationals: clip, quota, floor, largest remainders."""
    clipped = {o: max(v, Fraction(0)) for o, v in values.items()}
    wsum = sum(clipped.values())
    quotas = {o: total * w / wsum for o, w in clipped.items()}
    amounts = {o: q.numerator // q.denominator for o, q in quotas.items()}
    leftover = total - sum(amounts.values())
    for o in sorted(quotas, key=lambda o: (amounts[o] - quotas[o], o))[:leftover]:
        amounts[o] += 1
    return amounts


def reference_noisy(rows: list[Row], key) -> set:  # type: ignore[no-untyped-def]
    """Groups whose exact sum is within max(1e-9, n·2⁻⁵²) of their exact magnitude Σ|v|."""
    groups: dict = {}
    for row in rows:
        groups.setdefault(key(row), []).append(Fraction(row[3]))
    return {
        g
        for g, vs in groups.items()
        if sum(abs(v) for v in vs) > 0
        and abs(sum(vs)) <= Fraction(max(1e-9, len(vs) * 2.0**-52)) * sum(abs(v) for v in vs)
    }


NOISE = "indistinguishable from floating-point rounding"


# --- exact sums -------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.lists(st.tuples(st.integers(0, 4), finite), min_size=1, max_size=60))
def test_exact_group_sums_equal_rational_sums(pairs: list[tuple[int, float]]) -> None:
    groups = np.array([g for g, _ in pairs], dtype=np.int64)
    values = np.array([v for _, v in pairs], dtype=np.float64)
    sums = exact_group_sums(groups, values, 5)
    for g in range(5):
        assert sums.fraction(g) == sum((Fraction(v) for gg, v in pairs if gg == g), Fraction(0))


def test_exact_sums_do_not_lose_what_floats_lose() -> None:
    values = np.array([1e16, 1.0, -1e16, 1.0, 0.1, 0.2, -0.3])
    sums = exact_group_sums(np.zeros(len(values), dtype=np.int64), values, 1)
    assert sums.fraction(0) == Fraction(2) + Fraction(0.1) + Fraction(0.2) - Fraction(0.3)
    assert float(np.sum(values)) != float(sums.fraction(0))  # the float sum is off


def test_exact_sums_all_zero_and_large_counts() -> None:
    assert exact_group_sums(np.zeros(3, dtype=np.int64), np.zeros(3), 2).numerators == (0, 0)
    # Many rows with full 53-bit mantissas in one group must not overflow int64 sums.
    values = np.full(300_000, np.nextafter(1.0, 2.0))
    sums = exact_group_sums(np.zeros(len(values), dtype=np.int64), values, 1)
    assert sums.fraction(0) == 300_000 * Fraction(np.nextafter(1.0, 2.0))


# --- revenue split ------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value_rows(), st.integers(1, 10**12), st.sampled_from(sorted(MINOR_UNITS)), st.randoms(use_true_random=False))
def test_revenue_split_properties(rows: list[Row], revenue: int, code: str, rnd) -> None:  # type: ignore[no-untyped-def]
    reference_values = reference_owner_sums(rows)
    if reference_noisy(rows, lambda r: r[1]):
        with pytest.raises(DataError, match=NOISE):
            split_revenue(as_values(rows), revenue, PayoutPolicy())
        return
    assume(any(v > 0 for v in reference_values.values()))
    split = split_revenue(as_values(rows), revenue, PayoutPolicy())
    got = {o.owner: o.allocated for o in split.owners}

    assert sum(got.values()) == revenue  # exact, to the minor unit
    assert all(a >= 0 for a in got.values())
    assert got == reference_split(revenue, reference_values)
    assert [o.owner for o in split.owners] == sorted(reference_values)
    assert {o.owner: o.value for o in split.owners} == reference_values
    for o in split.owners:
        if reference_values[o.owner] <= 0:
            assert o.allocated == 0 and not o.weighted

    shuffled = list(rows)
    rnd.shuffle(shuffled)
    again = split_revenue(as_values(shuffled), revenue, PayoutPolicy())
    assert {o.owner: (o.allocated, o.value, o.share) for o in again.owners} == {
        o.owner: (o.allocated, o.value, o.share) for o in split.owners
    }
    assert currency(code)  # every listed code is usable


@settings(max_examples=100, deadline=None)
@given(value_rows(), st.data())
def test_splitting_an_owner_and_merging_back_keeps_its_total(rows: list[Row], data: st.DataObject) -> None:
    """Grouping is exact (docs/design.md §3.1): renaming some of an owner's images to a second
    name splits its value in two parts that add back to the same total, before clipping."""
    owners = sorted({r[1] for r in rows})
    victim = data.draw(st.sampled_from(owners))
    samples = sorted({r[0] for r in rows if r[1] == victim})
    moved = set(data.draw(st.lists(st.sampled_from(samples), unique=True)))
    renamed = [(s, f"{victim}#2" if s in moved else o, t, v) if o == victim else (s, o, t, v) for s, o, t, v in rows]

    def values_of(table_rows: list[Row]) -> dict[str, Fraction]:
        v = as_values(table_rows)
        sums = exact_group_sums(v.owner_codes, v.values, len(v.owners))
        return {owner: sums.fraction(i) for i, owner in enumerate(v.owners)}

    before = values_of(rows)
    after = values_of(renamed)
    assert after.get(victim, Fraction(0)) + after.get(f"{victim}#2", Fraction(0)) == before[victim]
    assert {o: v for o, v in after.items() if not o.startswith(victim)} == {
        o: v for o, v in before.items() if o != victim
    }


def test_no_positive_owner_fails_or_splits_equally() -> None:
    rows = [("a", "alice", "t", -1.0), ("b", "bob", "t", 0.0), ("c", "carol", "t", -2.0)]
    with pytest.raises(DataError, match="no owner has a positive value"):
        split_revenue(as_values(rows), 100, PayoutPolicy())
    split = split_revenue(as_values(rows), 100, PayoutPolicy(on_no_positive=OnNoPositive.EQUAL))
    assert [o.allocated for o in split.owners] == [34, 33, 33]
    assert split.equal_rule_targets == ("*",)


def test_rounded_to_zero_is_weighted() -> None:
    rows = [("a", "alice", "t", 1.0), ("b", "bob", "t", 1e-9)]
    split = split_revenue(as_values(rows), 100, PayoutPolicy())
    assert [(o.allocated, o.weighted) for o in split.owners] == [(100, True), (0, True)]


# --- the specific basis, and sums that are rounding noise ---------------------------------


@st.composite
def specific_rows(draw: st.DrawFn) -> list[Row]:
    """value_specific as a run computes it with the default reference: value − its mean over targets."""
    n_images = draw(st.integers(1, 10))
    targets = [f"t{i}" for i in range(draw(st.integers(2, 5)))]
    scale = draw(st.sampled_from([1e-3, 0.37, 1.0, 1e4]))
    rows = []
    for i in range(n_images):
        owner = draw(owner_names)
        # distinct values: a sample whose values are all equal has a specific part that is
        # itself rounding noise of its mean, which no rule on the column alone can tell
        ints = draw(st.lists(st.integers(-1000, 1000), min_size=len(targets), max_size=len(targets), unique=True))
        raw = np.array(ints, dtype=np.float64) * scale
        specific = raw - raw.mean()
        rows += [(f"s{i}", owner, t, float(v)) for t, v in zip(targets, specific)]
    return rows


def as_specific(rows: list[Row]) -> RunValues:
    return as_values(rows, "value_specific")


@settings(max_examples=150, deadline=None)
@given(specific_rows(), st.integers(1, 10**9))
def test_specific_revenue_is_one_equal_sale_per_target(rows: list[Row], revenue: int) -> None:
    targets = sorted({r[2] for r in rows})
    parts = reference_split(revenue, {t: Fraction(1) for t in targets})
    per_target = {t: reference_owner_sums([r for r in rows if r[2] == t]) for t in targets}
    policy = PayoutPolicy(basis=Basis.SPECIFIC)
    noisy = {t for t, _ in reference_noisy(rows, lambda r: (r[2], r[1]))}
    if any(parts[t] for t in noisy):
        with pytest.raises(DataError, match=NOISE):
            split_revenue(as_specific(rows), revenue, policy)
        return
    if any(parts[t] and not any(v > 0 for v in per_target[t].values()) for t in targets):
        with pytest.raises(DataError, match="no owner has a positive value for"):
            split_revenue(as_specific(rows), revenue, policy)
        return
    expected = {o: 0 for o in reference_owner_sums(rows)}
    for t in targets:
        if parts[t]:
            for o, a in reference_split(parts[t], per_target[t]).items():
                expected[o] += a
    split = split_revenue(as_specific(rows), revenue, policy)
    assert {o.owner: o.allocated for o in split.owners} == expected
    assert sum(expected.values()) == revenue == split.revenue


@settings(max_examples=150, deadline=None)
@given(specific_rows())
def test_pooling_a_column_that_cancels_by_construction_is_refused(rows: list[Row]) -> None:
    """Summed over all targets, value − its mean over targets is 0 up to rounding: never paid by."""
    assume(any(r[3] != 0 for r in rows))
    with pytest.raises(DataError, match=NOISE):
        split_revenue(as_specific(rows), 100, PayoutPolicy())


def test_noise_is_refused_naming_the_owner() -> None:
    rows = [("a", "alice", "t", 0.1), ("b", "alice", "t", 0.2), ("c", "alice", "t", -0.3), ("d", "bob", "t", 1.0)]
    assert sum(Fraction(r[3]) for r in rows[:3]) != 0  # not 0, just rounding
    with pytest.raises(DataError, match=NOISE + r".*owner 'alice' over all targets: Σ value = 2.78e-17 over 3 values") as caught:
        split_revenue(as_values(rows), 100, PayoutPolicy())
    assert "bob" not in str(caught.value)


def test_an_owner_whose_values_are_all_exactly_zero_is_not_noise() -> None:
    rows = [("a", "alice", "t", 0.0), ("b", "alice", "t", -0.0), ("c", "bob", "t", 2.0)]
    split = split_revenue(as_values(rows), 100, PayoutPolicy())
    assert [(o.owner, o.allocated, o.weighted) for o in split.owners] == [("alice", 0, False), ("bob", 100, True)]


def test_a_sale_whose_target_sums_are_noise_is_refused() -> None:
    rows = [
        ("a", "alice", "t1", 0.1), ("a", "alice", "t2", 1.0),
        ("b", "alice", "t1", 0.2), ("b", "alice", "t2", 1.0),
        ("c", "alice", "t1", -0.3), ("c", "alice", "t2", 1.0),
        ("d", "bob", "t1", 1.0), ("d", "bob", "t2", 1.0),
    ]
    t2_only = Ledger(currency("USD"), "0" * 64, (Sale(2, "s1", "t2", 100, None),), ())
    assert [o.allocated for o in split_sales(as_values(rows), t2_only, PayoutPolicy()).owners] == [75, 25]
    both = Ledger(currency("USD"), "0" * 64, (Sale(2, "s1", "t2", 100, None), Sale(3, "s2", "t1", 100, None)), ())
    with pytest.raises(DataError, match=r"owner 'alice' for sale 's2' \(line 3\), target 't1'"):
        split_sales(as_values(rows), both, PayoutPolicy())


# --- per-sale split -----------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(value_rows(), st.data())
def test_sales_split_is_the_sum_of_per_target_splits(rows: list[Row], data: st.DataObject) -> None:
    targets = sorted({r[2] for r in rows})
    per_target = {
        t: reference_owner_sums([r for r in rows if r[2] == t]) for t in targets
    }
    noisy = {t for t, _ in reference_noisy(rows, lambda r: (r[2], r[1]))}
    sellable = [t for t in targets if any(v > 0 for v in per_target[t].values()) and t not in noisy]
    assume(sellable)
    sales = data.draw(
        st.lists(st.tuples(st.sampled_from(sellable), st.integers(0, 10**9)), min_size=1, max_size=8)
    )
    ledger = Ledger(
        currency("USD"),
        "0" * 64,
        tuple(Sale(i + 2, f"s{i}", t, a, None) for i, (t, a) in enumerate(sales)),
        (),
    )
    split = split_sales(as_values(rows), ledger, PayoutPolicy(), detail=True)

    expected = {o: 0 for o in reference_owner_sums(rows)}
    for t, amount in sales:
        if amount:
            for o, a in reference_split(amount, per_target[t]).items():
                expected[o] += a
    assert {o.owner: o.allocated for o in split.owners} == expected
    assert split.revenue == sum(a for _, a in sales) == sum(expected.values())
    assert len(split.sales) == len(sales)
    for detail, (_, amount) in zip(split.sales, sales):
        assert sum(line.amount for line in detail.lines) == amount


def test_sale_for_a_target_without_positive_owner() -> None:
    rows = [("a", "alice", "t1", 1.0), ("a", "alice", "t2", -1.0), ("b", "bob", "t1", 1.0), ("b", "bob", "t2", 0.0)]
    ledger = Ledger(currency("USD"), "0" * 64, (Sale(2, "s1", "t1", 100, None), Sale(3, "s2", "t2", 101, None)), ())
    with pytest.raises(DataError, match=r"sale 's2' \(line 3\).*target 't2'"):
        split_sales(as_values(rows), ledger, PayoutPolicy())
    split = split_sales(as_values(rows), ledger, PayoutPolicy(on_no_positive=OnNoPositive.EQUAL))
    assert [o.allocated for o in split.owners] == [50 + 51, 50 + 50]
    assert split.equal_rule_targets == ("t2",)


# --- values table validation --------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([("a", "alice", "t", float("nan"))], r"row 0 \(sample_id 'a', target_id 't'\): value is nan"),
        ([("a", "alice", "t", 1.0), ("b", "bob", "t", float("inf"))], "row 1 .* not a finite number"),
        ([("a", "", "t", 1.0)], "owner is empty"),
        ([("a", "alice", "t", 1.0), ("a", "bob", "u", 1.0)], "same sample_id is listed under two owners"),
        ([("a", "alice", "t", 1.0), ("a", "alice", "t", 2.0)], "two rows for this target"),
    ],
)
def test_bad_values_tables(rows: list[Row], message: str) -> None:
    with pytest.raises(DataError, match=message):
        as_values(rows)
