"""`royalty payout` and `royalty schema payout` run as a user runs them: in a subprocess.

Independent invocations run concurrently (each spends most of its time importing), so
the whole file stays fast while every case keeps its own test id.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from payout_fixtures import make_run, royalty, royalty_batch, simple_rows  # noqa: E402
from royalty.attribution.contract import run_folder  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...]  # "{run}", "{specific}", "{tmp}" are filled in
    code: int
    message: str = ""


@dataclass(frozen=True)
class Env:
    tmp: Path
    run: Path
    specific: Path
    negative: Path
    tampered: Path
    no_values: Path
    sales: Path
    sales_jsonl: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Env:
    tmp = tmp_path_factory.mktemp("cli")
    rows = simple_rows()
    run = make_run(tmp / "run", rows)
    specific = make_run(tmp / "specific", rows, specific=[v - 0.5 for *_, v in rows], run_id="run-specific")
    negative = make_run(tmp / "negative", [("x", "xena", "t1", -1.0), ("y", "yann", "t1", -3.0)])
    tampered = make_run(tmp / "tampered", rows)
    make_run(tmp / "tamper-src", [(*r[:3], r[3] * 2) for r in rows])
    (tampered / run_folder.VALUES).write_bytes((tmp / "tamper-src" / run_folder.VALUES).read_bytes())
    no_values = make_run(tmp / "no-values", rows)
    (no_values / run_folder.VALUES).unlink()

    sales = tmp / "sales.csv"
    sales.write_text(
        "sale_id,target_id,amount,currency,date\n"
        "s1,t1,10.00,USD,2024-01-02\n"
        "s2,t2,5.01,USD,2024-01-03\n"
        "s3,t1,0.07,USD,2024-01-03\n",
        encoding="utf-8",
    )
    sales_jsonl = tmp / "sales.jsonl"
    sales_jsonl.write_text(
        '{"sale_id": "s1", "target_id": "t1", "amount": "100", "currency": "JPY"}\n'
        '{"sale_id": "s2", "target_id": "t2", "amount": 7, "currency": "JPY"}\n',
        encoding="utf-8",
    )
    for name, text in {
        "unknown_target.csv": "sale_id,target_id,amount\ns1,t1,1.00\ns2,nope,2.00\n",
        "duplicate.csv": "sale_id,target_id,amount\ns1,t1,1.00\ns1,t2,2.00\n",
        "mixed.csv": "sale_id,target_id,amount,currency\ns1,t1,1.00,USD\ns2,t2,2.00,EUR\n",
        "decimals.csv": "sale_id,target_id,amount,currency\ns1,t1,1.5,JPY\n",
    }.items():
        (tmp / name).write_text(text, encoding="utf-8")
    (tmp / "a-file").write_text("x", encoding="utf-8")
    return Env(tmp, run, specific, negative, tampered, no_values, sales, sales_jsonl)


def fill(args: tuple[str, ...], env: Env) -> list[str]:
    places = {"run": env.run, "specific": env.specific, "negative": env.negative, "tampered": env.tampered,
              "no_values": env.no_values, "tmp": env.tmp, "sales": env.sales}  # fmt: skip
    return [a.format(**places) for a in args]


ERROR_CASES = [
    Case("bad currency", ("payout", "{run}", "--revenue", "10", "--currency", "XYZ"), 2, "'XYZ' is not an active ISO 4217"),
    Case("metal currency", ("payout", "{run}", "--revenue", "10", "--currency", "XAU"), 2, "without a minor unit"),
    Case("too many decimals", ("payout", "{run}", "--revenue", "10.001"), 2, "--revenue: '10.001' has 3 decimals; USD allows 2"),
    Case("yen decimals", ("payout", "{run}", "--revenue", "10.5", "--currency", "JPY"), 2, "JPY allows no decimals"),
    Case("float-looking revenue", ("payout", "{run}", "--revenue", "1e3"), 2, "not a plain decimal"),
    Case("zero revenue", ("payout", "{run}", "--revenue", "0"), 2, "must be positive"),
    Case("min payout decimals", ("payout", "{run}", "--revenue", "10", "--min-payout", "0.001"), 2, "--min-payout"),
    Case("both modes", ("payout", "{run}", "--revenue", "10", "--sales", "{sales}"), 2, "exactly one of --revenue"),
    Case("no mode", ("payout", "{run}"), 2, "exactly one of --revenue"),
    Case("detail without sales", ("payout", "{run}", "--revenue", "1", "--detail"), 2, "--detail"),
    Case("detail with csv", ("payout", "{run}", "--sales", "{sales}", "--detail", "--format", "csv"), 2, "--detail needs --format json or jsonl"),
    Case("specific without reference", ("payout", "{run}", "--revenue", "1", "--basis", "specific"), 2, "without a reference set"),
    Case("typer choice", ("payout", "{run}", "--revenue", "1", "--basis", "cooked"), 2, ""),
    Case("unknown schema", ("schema", "nope"), 2, "no schema named 'nope'"),
    Case("tampered values", ("payout", "{tampered}", "--revenue", "10"), 65, "does not match its manifest"),
    Case("no positive owner", ("payout", "{negative}", "--revenue", "10"), 65, "no owner has a positive value"),
    Case("unknown target", ("payout", "{run}", "--sales", "{tmp}/unknown_target.csv"), 65, "line 3 (sale_id 's2'): target_id 'nope' is not a target"),
    Case("duplicate sale", ("payout", "{run}", "--sales", "{tmp}/duplicate.csv"), 65, "line 3 (sale_id 's1'): duplicate sale_id"),
    Case("mixed currencies", ("payout", "{run}", "--sales", "{tmp}/mixed.csv"), 65, "currency EUR differs from USD"),
    Case("ledger decimals", ("payout", "{run}", "--sales", "{tmp}/decimals.csv"), 65, "line 2 (sale_id 's1'): amount '1.5' has 1 decimal; JPY allows no decimals"),
    Case("missing run", ("payout", "{tmp}/nowhere", "--revenue", "10"), 66, "does not exist"),
    Case("missing values", ("payout", "{no_values}", "--revenue", "10"), 66, "values.parquet is missing"),
    Case("missing ledger", ("payout", "{run}", "--sales", "{tmp}/nope.csv"), 66, "sales ledger"),
    Case("output under a file", ("payout", "{run}", "--revenue", "1", "--output", "{tmp}/a-file/out.json"), 73, "cannot create"),
    Case("output is a folder", ("payout", "{run}", "--revenue", "1", "--output", "{tmp}"), 73, "is a folder"),
]  # fmt: skip


@pytest.fixture(scope="module")
def results(env: Env, console_script: Callable[[], CompletedProcess[str]]) -> dict[str, CompletedProcess[str]]:
    """Every command line of this file, run in one batch (see payout_cli_batch.py)."""
    cases = [(fill(c.args, env), None) for c in ERROR_CASES]
    cases += [
        (fill(args, env), {"SOURCE_DATE_EPOCH": "1800000000"} if name == "revenue other time" else None)
        for name, args in GOOD.items()
    ]
    names = [c.name for c in ERROR_CASES] + list(GOOD)
    done = royalty_batch(cases, tty_stderr=[names.index(n) for n in TTY])
    return dict(zip([c.name for c in ERROR_CASES] + list(GOOD), done))


@pytest.fixture(scope="module")
def console_script(env: Env) -> Iterator[Callable[[], CompletedProcess[str]]]:
    """The installed `royalty` script in a plain subprocess, started early to overlap the batch."""
    script = Path(sys.executable).with_name("royalty")
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(royalty, "payout", env.run, "--revenue", "100", script=script)
        yield future.result


@pytest.fixture(scope="module")
def error_results(results: dict[str, CompletedProcess[str]]) -> dict[str, CompletedProcess[str]]:
    return results


@pytest.mark.parametrize("case", ERROR_CASES, ids=[c.name for c in ERROR_CASES])
def test_bad_input_exit_code_and_message(case: Case, error_results: dict[str, CompletedProcess[str]]) -> None:
    result = error_results[case.name]
    assert result.returncode == case.code, result.stderr
    assert result.stdout == ""  # nothing but the document ever goes to stdout
    assert case.message in " ".join(result.stderr.split())
    if case.code != 2 or case.message:
        assert "Traceback" not in result.stderr


# --- successful runs ---------------------------------------------------------------------

GOOD = {
    "schema": ("schema", "payout"),
    "revenue": ("payout", "{run}", "--revenue", "100"),
    "revenue again": ("payout", "{run}", "--revenue", "100"),
    "revenue other time": ("payout", "{run}", "--revenue", "100"),
    "min payout": ("payout", "{run}", "--revenue", "100", "--min-payout", "34", "--currency", "EUR"),
    "sales detail": ("payout", "{run}", "--sales", "{sales}", "--detail"),
    "sales jsonl": ("payout", "{run}", "--sales", "{sales}", "--detail", "--format", "jsonl"),
    "sales yen": ("payout", "{run}", "--sales", "{tmp}/sales.jsonl"),
    "specific": ("payout", "{specific}", "--revenue", "9.99", "--basis", "specific"),
    "equal": ("payout", "{negative}", "--revenue", "0.01", "--on-no-positive", "equal"),
    "csv": ("payout", "{run}", "--revenue", "100", "--format", "csv"),
    "output": ("payout", "{run}", "--revenue", "100", "--output", "{tmp}/out/statement.json"),
    "quiet output": ("payout", "{run}", "--revenue", "1", "-q", "-o", "{tmp}/quiet.json"),
    "mixed with currency": ("payout", "{run}", "--sales", "{tmp}/mixed.csv", "--currency", "EUR"),
    "terminal": ("payout", "{run}", "--revenue", "100"),
    "terminal quiet": ("payout", "{run}", "--revenue", "100", "--quiet"),
}
TTY = ("terminal", "terminal quiet")


@pytest.fixture(scope="module")
def good(results: dict[str, CompletedProcess[str]]) -> dict[str, CompletedProcess[str]]:
    for name in GOOD:
        assert results[name].returncode == 0, f"{name}: {results[name].stderr}"
    return results


@pytest.fixture(scope="module")
def schema(good: dict[str, CompletedProcess[str]]) -> dict[str, Any]:
    schema = json.loads(good["schema"].stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def doc_of(good: dict[str, CompletedProcess[str]], name: str, schema: dict[str, Any]) -> dict[str, Any]:
    doc = json.loads(good[name].stdout)  # stdout is the document and nothing else
    jsonschema.validate(doc, schema, format_checker=jsonschema.FormatChecker())
    totals = doc["totals"]
    assert totals["paid"]["minor"] + totals["carried_forward"]["minor"] == doc["revenue"]["minor"]
    assert sum(p["amount"]["minor"] + p["carried_forward"]["minor"] for p in doc["payees"]) == doc["revenue"]["minor"]
    assert [p["owner"] for p in doc["payees"]] == sorted(p["owner"] for p in doc["payees"])
    return doc


def test_revenue_statement(good: dict[str, CompletedProcess[str]], schema: dict[str, Any], env: Env) -> None:
    doc = doc_of(good, "revenue", schema)
    assert good["revenue"].stderr == ""  # stderr is not a terminal: no table
    assert doc["created_at"] == "2023-11-14T22:13:20Z"  # SOURCE_DATE_EPOCH=1700000000
    assert doc["currency"] == {"code": "USD", "exponent": 2}
    assert doc["revenue"] == {"minor": 10000, "amount": "100.00"}
    payees = {p["owner"]: p for p in doc["payees"]}
    # alice 6, bob 3, carol -1.5 (clipped): 2/3 and 1/3 of 100.00, the odd cent to the larger remainder.
    assert {o: p["amount"]["amount"] for o, p in payees.items()} == {"alice": "66.67", "bob": "33.33", "carol": "0.00"}
    assert payees["carol"]["status"] == "not_positive" and payees["carol"]["value_sum_decimal"] == "-1.5"
    assert payees["alice"]["images"] == 2 and payees["alice"]["share"] == "0.6666666667"
    prov = doc["provenance"]
    assert prov["run_id"] == "run-test-1" and prov["values_sha256"] == run_folder.output_hashes(env.run)["values.parquet"]
    assert prov["model_sha256"] == run_folder.output_hashes(env.run)["model"]
    assert prov["dataset_manifest_sha256"] and prov["ledger_sha256"] is None
    assert doc["policy"]["basis"] == "raw" and doc["policy"]["on_no_positive"] == "fail"


def test_same_payout_same_ids(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    assert good["revenue"].stdout == good["revenue again"].stdout  # byte-identical
    first, later = doc_of(good, "revenue", schema), doc_of(good, "revenue other time", schema)
    assert first["created_at"] != later["created_at"]
    assert first["statement_id"] == later["statement_id"]
    assert [p["idempotency_key"] for p in first["payees"]] == [p["idempotency_key"] for p in later["payees"]]
    assert len({p["idempotency_key"] for p in first["payees"]}) == len(first["payees"])
    other = doc_of(good, "min payout", schema)
    assert other["statement_id"] != first["statement_id"]


def test_min_payout_carries_forward(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    doc = doc_of(good, "min payout", schema)
    payees = {p["owner"]: p for p in doc["payees"]}
    assert payees["alice"]["amount"]["amount"] == "66.67" and payees["alice"]["status"] == "paid"
    # bob's 33.33 is below 34: kept for bob, not handed to alice.
    assert payees["bob"]["amount"]["minor"] == 0 and payees["bob"]["carried_forward"]["amount"] == "33.33"
    assert payees["bob"]["status"] == "carried_forward"
    assert doc["totals"]["paid"]["amount"] == "66.67" and doc["totals"]["carried_forward"]["amount"] == "33.33"
    assert doc["policy"]["min_payout"] == {"minor": 3400, "amount": "34.00"}


def test_sales_with_detail(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    doc = doc_of(good, "sales detail", schema)
    assert doc["mode"] == "sales" and doc["revenue"]["amount"] == "15.08"
    assert doc["sales"] == {"count": 3, "targets": 2, "excluded": []}
    assert doc["provenance"]["ledger_sha256"] is not None
    details = {d["sale_id"]: d for d in doc["sale_details"]}
    # t1: alice 4, bob 1, carol -1 → 4/5 and 1/5; t2: alice 2, bob 2, carol -0.5 → halves.
    assert {line["owner"]: line["amount"]["amount"] for line in details["s1"]["lines"]} == {"alice": "8.00", "bob": "2.00"}
    assert {line["owner"]: line["amount"]["amount"] for line in details["s2"]["lines"]} == {"alice": "2.51", "bob": "2.50"}
    assert {line["owner"]: line["amount"]["amount"] for line in details["s3"]["lines"]} == {"alice": "0.06", "bob": "0.01"}
    payees = {p["owner"]: p["amount"]["amount"] for p in doc["payees"]}
    assert payees == {"alice": "10.57", "bob": "4.51", "carol": "0.00"}


def test_sales_jsonl_records(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    record_schema = {**schema["$defs"]["jsonl_record"], "$defs": schema["$defs"]}
    lines = good["sales jsonl"].stdout.splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        jsonschema.validate(record, record_schema)
    assert [r["record"] for r in records].count("payee") == 3
    assert sum(r["amount"]["minor"] for r in records if r["record"] == "sale_line") == 1508


def test_sales_in_yen_from_jsonl(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    doc = doc_of(good, "sales yen", schema)
    assert doc["currency"] == {"code": "JPY", "exponent": 0} and doc["revenue"] == {"minor": 107, "amount": "107"}
    assert "sale_details" not in doc


def test_specific_basis(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    doc = doc_of(good, "specific", schema)
    assert doc["policy"]["basis"] == "specific" and doc["provenance"]["values_column"] == "value_specific"
    # value_specific = value - 0.5 per row, split target by target: 999 cents in equal parts,
    # 500 to t1 (the tie goes to the first target id) and 499 to t2. t1: alice 3, bob 0.5,
    # carol -1.5 → 429 + 71 cents; t2: alice 1, bob 1.5, carol -1 → 199.6 → 200, 299.4 → 299.
    assert doc["policy"]["target_weighting"] == "per_target"
    assert [p["amount"]["amount"] for p in doc["payees"]] == ["6.29", "3.70", "0.00"]


def test_equal_rule(good: dict[str, CompletedProcess[str]], schema: dict[str, Any]) -> None:
    doc = doc_of(good, "equal", schema)
    assert doc["equal_split"] == ["*"] and doc["policy"]["on_no_positive"] == "equal"
    # One cent over two equal owners: the tie goes to the first owner by name.
    assert [(p["owner"], p["amount"]["minor"]) for p in doc["payees"]] == [("xena", 1), ("yann", 0)]


def test_csv_output(good: dict[str, CompletedProcess[str]]) -> None:
    rows = list(csv.DictReader(io.StringIO(good["csv"].stdout)))
    assert [(r["owner"], r["amount"]) for r in rows] == [("alice", "66.67"), ("bob", "33.33"), ("carol", "0.00")]


def test_quiet_output_file_says_nothing(good: dict[str, CompletedProcess[str]], env: Env) -> None:
    assert good["quiet output"].stdout == "" and good["quiet output"].stderr == ""
    assert json.loads((env.tmp / "quiet.json").read_text(encoding="utf-8"))["revenue"]["amount"] == "1.00"


def test_output_file(good: dict[str, CompletedProcess[str]], env: Env) -> None:
    assert good["output"].stdout == ""
    assert (env.tmp / "out" / "statement.json").read_text(encoding="utf-8") == good["revenue"].stdout
    assert not [p for p in (env.tmp / "out").iterdir() if p.name != "statement.json"]  # no temp files left


def test_console_script_end_to_end(
    console_script: Callable[[], CompletedProcess[str]], good: dict[str, CompletedProcess[str]]
) -> None:
    """A plain subprocess of the installed script gives the same bytes as the batch runner."""
    result = console_script()
    assert result.returncode == 0, result.stderr
    assert result.stdout == good["revenue"].stdout and result.stderr == ""
    assert json.loads(result.stdout)["format_version"] == 1


def test_mixed_ledger_pays_one_currency_and_reports_the_rest(
    good: dict[str, CompletedProcess[str]], schema: dict[str, Any]
) -> None:
    doc = doc_of(good, "mixed with currency", schema)
    assert doc["currency"]["code"] == "EUR" and doc["revenue"]["amount"] == "2.00"
    assert doc["sales"]["excluded"] == [{"currency": "USD", "count": 1, "amount": "1.00"}]


def test_summary_table_on_a_terminal_only(good: dict[str, CompletedProcess[str]]) -> None:
    # stdout is the same document whether or not a person watches stderr.
    assert good["terminal"].stdout == good["revenue"].stdout
    table = good["terminal"].stderr
    assert "Payout statement" in table and "66.67" in table and "carol" in table
    assert good["terminal quiet"].stderr == ""
