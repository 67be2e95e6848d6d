"""beancount / hledger / csv / table renderings: a grammar check that always runs, and the
real tools (bean-check, beancount's loader, hledger) when they are installed."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from payout_fixtures import make_run  # noqa: E402

from royalty.payout.formats import CSV_COLUMNS, account_component, render  # noqa: E402
from royalty.payout.policy import OnNoPositive  # noqa: E402
from royalty.payout.schema import payout_schema  # noqa: E402
from royalty.payout.service import PayoutRequest, compute_payout  # noqa: E402

OWNERS = ["alice", "Bob", 'Studio "Q", Ltd\\x', "ünï cödé", "a:b;c", "日本", "tiny"]
NOW = "2024-03-01T12:00:00Z"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    values = [3.0, 2.5, 1.25, 0.75, 0.02, 1.0, 1e-7]
    rows = []
    for i, (owner, v) in enumerate(zip(OWNERS, values)):
        for t, scale in (("t1", 1.0), ("t2", 0.5)):
            rows.append((f"img{i}", owner, t, v * scale))
    rows.append(("neg", "zoe", "t1", -4.0))
    rows.append(("neg", "zoe", "t2", -1.0))
    return make_run(tmp_path_factory.mktemp("fmt") / "run", rows)


CASES = [("USD", "1000.00", "5.00"), ("JPY", "100000", "500"), ("BHD", "12.345", "0.2"), ("CLF", "3.5", None)]


def statement(run_dir: Path, code: str, revenue: str, minimum: str | None) -> dict[str, Any]:
    request = PayoutRequest(run_dir=run_dir, revenue=revenue, currency=code, min_payout=minimum)
    doc = compute_payout(request, now=NOW)
    jsonschema.validate(doc, payout_schema())
    return doc


# --- grammar checks (no external tool) ----------------------------------------------------

BEAN_ACCOUNT = r"(?:Assets|Liabilities|Equity|Income|Expenses)(?::[A-Z0-9][A-Za-z0-9-]*)+"
BEAN_CURRENCY = r"[A-Z][A-Z0-9'._-]{0,22}[A-Z0-9]"
BEAN_STRING = r'"(?:[^"\\]|\\.)*"'
BEAN_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"


def _unescape_bean(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def check_beancount_grammar(text: str, doc: dict[str, Any]) -> None:
    """The subset of the beancount language the renderer uses, checked line by line."""
    opened: set[str] = set()
    postings: list[tuple[str, Decimal, str, dict[str, str]]] = []
    in_txn = False
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            in_txn = False
            continue
        if m := re.fullmatch(rf"(\d{{4}}-\d{{2}}-\d{{2}}) open ({BEAN_ACCOUNT}) ({BEAN_CURRENCY})", line):
            assert m.group(1) == NOW[:10]
            opened.add(m.group(2))
            continue
        if re.fullmatch(rf"\d{{4}}-\d{{2}}-\d{{2}} [*!] {BEAN_STRING} {BEAN_STRING}", line):
            in_txn = True
            continue
        assert in_txn, f"line outside a transaction: {line!r}"
        if m := re.fullmatch(rf"  ({BEAN_ACCOUNT})  ({BEAN_NUMBER}) ({BEAN_CURRENCY})", line):
            assert m.group(1) in opened, f"{m.group(1)} used before open"
            postings.append((m.group(1), Decimal(m.group(2)), m.group(3), {}))
        elif m := re.fullmatch(rf"( {{2,4}})([a-z][A-Za-z0-9_-]*): ({BEAN_STRING})", line):
            if len(m.group(1)) == 4:  # posting metadata
                postings[-1][3][m.group(2)] = _unescape_bean(m.group(3))
        else:
            raise AssertionError(f"not beancount: {line!r}")
    check_postings(postings, doc)


HLEDGER_ACCOUNT = r"[^\s;:][^;]*?(?::[^;\s][^;]*?)*"


def check_hledger_grammar(text: str, doc: dict[str, Any]) -> None:
    """hledger journal: commodity directive, transaction header, two-space-separated postings."""
    postings: list[tuple[str, Decimal, str, dict[str, str]]] = []
    exponent = doc["currency"]["exponent"]
    for line in text.splitlines():
        if not line.strip() or line.startswith(";"):
            continue
        if m := re.fullmatch(r"commodity 1000\.([0-9]*) ([A-Z]{3})", line):
            assert len(m.group(1)) == exponent and m.group(2) == doc["currency"]["code"]
            continue
        if re.fullmatch(r"\d{4}-\d{2}-\d{2} [*!] [^;]+?  ; statement_id:[0-9a-f]{64}, run_id:\S+", line):
            continue
        m = re.fullmatch(
            rf"    ({HLEDGER_ACCOUNT})  ({BEAN_NUMBER}) ([A-Z]{{3}})(?:  ; (.*))?", line
        )
        assert m, f"not an hledger posting: {line!r}"
        assert "  " not in m.group(1) and "\t" not in m.group(1)
        tags: dict[str, str] = {}
        if m.group(4):
            for part in m.group(4).split(", "):
                key, _, value = part.partition(":")
                tags[key] = value
            if "owner_json" in tags:
                tags["owner"] = json.loads(tags.pop("owner_json"))
        postings.append((m.group(1), Decimal(m.group(2)), m.group(3), tags))
    check_postings(postings, doc)


def check_postings(postings: list[tuple[str, Decimal, str, dict[str, str]]], doc: dict[str, Any]) -> None:
    """The ledger says what the statement says: balanced, every owner's amount, exact decimals."""
    exponent = doc["currency"]["exponent"]
    assert postings, "no postings"
    assert sum(p[1] for p in postings) == 0, "transaction does not balance"
    for account, amount, code, _ in postings:
        assert code == doc["currency"]["code"]
        assert -amount.as_tuple().exponent == exponent or (exponent == 0 and amount == amount.to_integral())
    expected = {}
    for p in doc["payees"]:
        if p["amount"]["minor"]:
            expected[("Payable", p["owner"])] = Decimal("-" + p["amount"]["amount"])
        if p["carried_forward"]["minor"]:
            expected[("Carried-Forward", p["owner"])] = Decimal("-" + p["carried_forward"]["amount"])
    got = {}
    for account, amount, _, meta in postings[1:]:
        kind = account.split(":")[2]
        assert account.split(":")[3] == account_component(meta["owner"])
        got[(kind, meta["owner"])] = amount
        payee = next(p for p in doc["payees"] if p["owner"] == meta["owner"])
        assert meta.get("idempotency-key", meta.get("idempotency_key")) == payee["idempotency_key"]
    assert got == expected
    assert postings[0][1] == Decimal(doc["revenue"]["amount"])


@pytest.mark.parametrize(("code", "revenue", "minimum"), CASES)
def test_beancount_grammar(run_dir: Path, code: str, revenue: str, minimum: str | None) -> None:
    doc = statement(run_dir, code, revenue, minimum)
    check_beancount_grammar(render(doc, "beancount"), doc)


@pytest.mark.parametrize(("code", "revenue", "minimum"), CASES)
def test_hledger_grammar(run_dir: Path, code: str, revenue: str, minimum: str | None) -> None:
    doc = statement(run_dir, code, revenue, minimum)
    check_hledger_grammar(render(doc, "hledger"), doc)


def test_carried_forward_is_booked_separately(run_dir: Path) -> None:
    doc = statement(run_dir, "USD", "1000.00", "5.00")
    statuses = {p["owner"]: p["status"] for p in doc["payees"]}
    assert statuses["tiny"] == "rounded_to_zero" and statuses["zoe"] == "not_positive"
    assert "carried_forward" in statuses.values()
    assert "Liabilities:Royalties:Carried-Forward:" in render(doc, "beancount")


def test_account_components_are_stable_and_distinct() -> None:
    names = OWNERS + ["alice ", "Alice", "a-b-c", "a b c"]
    components = [account_component(n) for n in names]
    assert len(set(components)) == len(names)
    assert account_component("Bob") == "Bob"
    assert all(re.fullmatch(r"[A-Z0-9][A-Za-z0-9-]*", c) for c in components)


def test_csv_and_table(run_dir: Path) -> None:
    doc = statement(run_dir, "USD", "1000.00", None)
    rows = list(csv.DictReader(io.StringIO(render(doc, "csv"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["owner"] for r in rows] == [p["owner"] for p in doc["payees"]]
    assert sum(int(r["amount_minor"]) for r in rows) == 100000
    table = render(doc, "table")
    assert "1000.00" in table and all(o in table for o in OWNERS)


def test_equal_rule_is_recorded(tmp_path: Path) -> None:
    run = make_run(tmp_path / "neg", [("a", "x", "t", -1.0), ("b", "y", "t", -2.0)])
    doc = compute_payout(
        PayoutRequest(run_dir=run, revenue="1", on_no_positive=OnNoPositive.EQUAL), now=NOW
    )
    jsonschema.validate(doc, payout_schema())
    assert doc["equal_split"] == ["*"] and [p["amount"]["amount"] for p in doc["payees"]] == ["0.50", "0.50"]


# --- the real tools -----------------------------------------------------------------------


@pytest.mark.parametrize(("code", "revenue", "minimum"), CASES)
def test_beancount_loader_accepts_and_round_trips(run_dir: Path, code: str, revenue: str, minimum: str | None) -> None:
    loader = pytest.importorskip("beancount.loader")
    doc = statement(run_dir, code, revenue, minimum)
    entries, errors, _ = loader.load_string(render(doc, "beancount"))
    assert errors == []
    (txn,) = [e for e in entries if type(e).__name__ == "Transaction"]
    owners = {p.meta["owner"]: -p.units.number for p in txn.postings if "owner" in p.meta}
    expected = {
        p["owner"]: Decimal(p["amount"]["amount"]) + Decimal(p["carried_forward"]["amount"])
        for p in doc["payees"]
        if p["amount"]["minor"] or p["carried_forward"]["minor"]
    }
    assert owners == expected


@pytest.mark.skipif(shutil.which("bean-check") is None, reason="bean-check not installed")
def test_bean_check(run_dir: Path, tmp_path: Path) -> None:
    doc = statement(run_dir, "BHD", "12.345", "0.2")
    path = tmp_path / "payout.beancount"
    path.write_text(render(doc, "beancount"), encoding="utf-8")
    result = subprocess.run(["bean-check", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("hledger") is None, reason="hledger not installed")
@pytest.mark.parametrize(("code", "revenue", "minimum"), CASES[:3])
def test_hledger_accepts(run_dir: Path, tmp_path: Path, code: str, revenue: str, minimum: str | None) -> None:
    doc = statement(run_dir, code, revenue, minimum)
    path = tmp_path / "payout.journal"
    path.write_text(render(doc, "hledger"), encoding="utf-8")
    result = subprocess.run(
        ["hledger", "-f", str(path), "balance", "--flat", "--no-total", "-O", "csv"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    balances = {row[0]: row[1] for row in list(csv.reader(io.StringIO(result.stdout)))[1:]}
    assert balances["Expenses:Royalties:Revenue-Share"].split()[0] == doc["revenue"]["amount"]
    # hledger reads every posting amount exactly as written (no decimal-mark confusion).
    paid = sum(
        Decimal(v.split()[0]) for k, v in balances.items() if k.startswith("Liabilities:Royalties:")
    )
    assert paid == -Decimal(doc["revenue"]["amount"])
    printed = subprocess.run(["hledger", "-f", str(path), "print"], capture_output=True, text=True, check=False)
    assert printed.returncode == 0, printed.stderr
