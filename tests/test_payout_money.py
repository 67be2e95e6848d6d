"""Money: the ISO 4217 table, decimal parsing, and largest-remainder allocation."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from royalty.payout.allocate import largest_remainder, largest_remainder_many
from royalty.payout.currency import MINOR_UNITS, NO_MINOR_UNIT, AmountError, currency, format_minor, parse_minor

CODES = sorted(MINOR_UNITS)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("BHD", 3), ("KWD", 3), ("OMR", 3), ("JOD", 3),
     ("TND", 3), ("LYD", 3), ("IQD", 3), ("CLF", 4), ("UYW", 4), ("ISK", 0), ("XOF", 0), ("VND", 0)],
)  # fmt: skip
def test_iso_4217_exponents(code: str, exponent: int) -> None:
    assert currency(code).exponent == exponent


def test_table_is_well_formed() -> None:
    assert len(MINOR_UNITS) > 150
    assert all(len(c) == 3 and c.isupper() and c.isalpha() for c in MINOR_UNITS)
    assert set(MINOR_UNITS.values()) <= {0, 2, 3, 4}
    assert not NO_MINOR_UNIT & set(MINOR_UNITS)


def test_currency_lookup_errors() -> None:
    assert currency(" usd ").code == "USD"
    with pytest.raises(AmountError, match="not an active ISO 4217"):
        currency("XYZ")
    with pytest.raises(AmountError, match="without a minor unit"):
        currency("XAU")


@pytest.mark.parametrize(
    ("text", "code", "minor"),
    [("0", "USD", 0), ("12", "USD", 1200), ("12.3", "USD", 1230), ("12.34", "USD", 1234), ("0.01", "USD", 1),
     ("100", "JPY", 100), ("1.234", "BHD", 1234), ("1.0001", "CLF", 10001), (" 7.5 ", "EUR", 750),
     ("123456789012345678901234567890.99", "USD", 12345678901234567890123456789099)],
)  # fmt: skip
def test_parse_minor(text: str, code: str, minor: int) -> None:
    assert parse_minor(text, currency(code)) == minor


@pytest.mark.parametrize(
    ("text", "code", "message"),
    [("12.345", "USD", "3 decimals; USD allows 2 decimals"), ("12.50", "JPY", "JPY allows no decimals"),
     ("1.0", "JPY", "no decimals"), ("10.000", "USD", "3 decimals"), ("1.23456", "CLF", "CLF allows 4"),
     ("1e3", "USD", "plain decimal"), ("1,000", "USD", "plain decimal"), ("", "USD", "plain decimal"),
     ("12.", "USD", "plain decimal"), (".5", "USD", "plain decimal"), ("+5", "USD", "plain decimal"),
     ("NaN", "USD", "plain decimal"), ("-1", "USD", "negative"), ("١٢", "USD", "plain decimal")],
)  # fmt: skip
def test_parse_minor_rejects(text: str, code: str, message: str) -> None:
    with pytest.raises(AmountError, match=message):
        parse_minor(text, currency(code))


@given(st.sampled_from(CODES), st.integers(min_value=-(10**20), max_value=10**20))
def test_format_parse_round_trip(code: str, minor: int) -> None:
    cur = currency(code)
    text = format_minor(minor, cur)
    assert parse_minor(text, cur, allow_negative=True) == minor
    assert ("." in text) == (cur.exponent > 0)


def reference_allocation(total: int, keys: list[str], weights: list[Fraction]) -> dict[str, int]:
    """Slow textbook Hamilton method on exact rationals, written independently of the code."""
    wsum = sum(weights)
    quotas = {k: total * w / wsum for k, w in zip(keys, weights)}
    result = {k: int(q) for k, q in quotas.items()}  # quotas are >= 0, int() floors
    left = total - sum(result.values())
    by_remainder = sorted(keys, key=lambda k: (-(quotas[k] - result[k]), k))
    for k in by_remainder[:left]:
        result[k] += 1
    return result


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=10**15),
    st.dictionaries(
        st.text(alphabet="abcXYZ0_ é", min_size=1, max_size=4),
        st.integers(min_value=0, max_value=10**6),
        min_size=1,
        max_size=12,
    ).filter(lambda d: any(d.values())),
)
def test_largest_remainder_matches_reference(total: int, weights: dict[str, int]) -> None:
    keys = list(weights)
    got = largest_remainder(total, keys, [weights[k] for k in keys])
    assert sum(got) == total
    assert all(a >= 0 for a in got)
    assert dict(zip(keys, got)) == reference_allocation(total, keys, [Fraction(weights[k]) for k in keys])
    for k, a in zip(keys, got):
        if weights[k] == 0:
            assert a == 0
        exact = Fraction(total * weights[k], sum(weights.values()))
        assert abs(a - exact) < 1  # never more than one minor unit from the exact quota


def test_ties_go_to_owner_ascending() -> None:
    # 100 minor units over three equal owners: the leftover unit goes to the first name.
    assert largest_remainder(100, ["b", "a", "c"], [1, 1, 1]) == [33, 34, 33]
    assert largest_remainder(2, ["z", "y", "x"], [1, 1, 1]) == [0, 1, 1]


def test_largest_remainder_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        largest_remainder(10, ["a"], [0])
    with pytest.raises(ValueError):
        largest_remainder(10, ["a", "b"], [1, -1])
    with pytest.raises(ValueError):
        largest_remainder(-1, ["a"], [1])


weight_lists = st.one_of(
    st.lists(st.integers(0, 4), min_size=1, max_size=20),  # many exact ties
    st.lists(st.integers(0, 2**100), min_size=1, max_size=20),
    st.lists(st.sampled_from([0, 2**80, 2**80 + 1, 3 * 2**79, 10**24]), min_size=1, max_size=20),  # near-ties
).filter(lambda w: any(w))


@settings(max_examples=150)
@given(
    weight_lists,
    st.lists(st.one_of(st.integers(0, 10**7), st.integers(2**31 - 3, 2**31 + 3), st.integers(0, 10**25)), max_size=30),
    st.randoms(use_true_random=False),
)
def test_many_totals_agree_with_one_at_a_time(weights: list[int], totals: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    """The vectorised per-sale path must give exactly the exact path's answer, row by row."""
    keys = [f"o{i:02d}" for i in range(len(weights))]
    rnd.shuffle(keys)  # keys in any order: ties still go to the smaller key
    got = largest_remainder_many(totals, keys, weights)
    assert [list(map(int, row)) for row in got] == [largest_remainder(t, keys, weights) for t in totals]


def test_many_totals_fast_path_at_scale() -> None:
    import random

    rnd = random.Random(7)
    keys = [f"owner{i:03d}" for i in range(300)]
    weights = [rnd.getrandbits(90) if i % 7 else 0 for i in range(300)]
    totals = [rnd.randint(0, 10**6) for _ in range(400)] + [100, 10**6, 0]
    got = largest_remainder_many(totals, keys, weights)
    assert got.dtype.kind == "i"
    assert got.tolist() == [largest_remainder(t, keys, weights) for t in totals]
