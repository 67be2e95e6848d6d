"""The sales ledger: CSV and JSON Lines, and an error naming the row for each bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from royalty.errors import DataError, InputMissingError, UsageError
from royalty.payout.ledger import read_ledger

TARGETS = frozenset({"t1", "t2"})


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_ledger(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sales.csv",
        "sale_id,target_id,amount,currency,date,customer\n"
        "s1,t1,10.00,EUR,2024-01-02,x\n"
        "\n"
        "s2,t2,0.5,eur,2024-01-03T10:00:00,y\n",
    )
    ledger = read_ledger(path, TARGETS, None)
    assert ledger.currency.code == "EUR"
    assert [(s.line, s.sale_id, s.target_id, s.amount, s.date) for s in ledger.sales] == [
        (2, "s1", "t1", 1000, "2024-01-02"),
        (4, "s2", "t2", 50, "2024-01-03"),
    ]
    assert len(ledger.sha256) == 64 and ledger.excluded == ()


def test_jsonl_ledger_keeps_number_literals_exact(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "sales.jsonl",
        '{"sale_id": "s1", "target_id": "t1", "amount": 0.1, "currency": "BHD"}\n'
        '{"sale_id": 2, "target_id": "t2", "amount": "1.005"}\n',
    )
    ledger = read_ledger(path, TARGETS, None)
    assert ledger.currency.code == "BHD"
    assert [(s.sale_id, s.amount, s.date) for s in ledger.sales] == [("s1", 100, None), ("2", 1005, None)]


def test_default_currency_and_option(tmp_path: Path) -> None:
    path = write(tmp_path, "s.csv", "sale_id,target_id,amount\ns1,t1,3\n")
    assert read_ledger(path, TARGETS, None).currency.code == "USD"
    assert read_ledger(path, TARGETS, "JPY").sales[0].amount == 3


def test_mixed_currencies_need_a_rule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "s.csv",
        "sale_id,target_id,amount,currency\ns1,t1,1.00,USD\ns2,t1,2.00,EUR\ns3,t2,3.00,EUR\ns4,t2,4.00,USD\n",
    )
    with pytest.raises(DataError, match=r"s.csv line 3: currency EUR differs from USD on line 2.*--currency"):
        read_ledger(path, TARGETS, None)
    ledger = read_ledger(path, TARGETS, "EUR")
    assert [s.sale_id for s in ledger.sales] == ["s2", "s3"]
    assert [(e.code, e.count, e.amount) for e in ledger.excluded] == [("USD", 2, "5.00")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("sale_id,amount\ns1,1\n", r"line 1: header lacks column\(s\) target_id"),
        ("sale_id,target_id,amount\ns1,t1,1\ns1,t2,2\n", r"line 3 \(sale_id 's1'\): duplicate sale_id, first used on line 2"),
        ("sale_id,target_id,amount\ns1,t9,1\n", r"line 2 \(sale_id 's1'\): target_id 't9' is not a target of this run"),
        ("sale_id,target_id,amount\ns1,t1,1.001\n", r"line 2 \(sale_id 's1'\): amount '1.001' has 3 decimals; USD allows 2"),
        ("sale_id,target_id,amount\ns1,t1,-5\n", r"line 2 .*amount '-5' is negative"),
        ("sale_id,target_id,amount\ns1,t1,1e3\n", r"line 2 .*not a plain decimal"),
        ("sale_id,target_id,amount\ns1,t1,\n", r"line 2 .*amount must be a decimal"),
        ("sale_id,target_id,amount\n,t1,1\n", r"line 2: sale_id must be a non-empty string"),
        ("sale_id,target_id,amount,currency\ns1,t1,1,DOLLARS\n", r"line 2 .*'DOLLARS' is not an active ISO 4217"),
        ("sale_id,target_id,amount,date\ns1,t1,1,02/01/2024\n", r"line 2 .*date '02/01/2024' is not an ISO 8601 date"),
        ("sale_id,target_id,amount\ns1,t1,1,extra\n", r"line 2: more fields than the header has"),
        ("sale_id,target_id,amount\n", "holds no sales"),
    ],
)
def test_csv_errors_name_the_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_ledger(write(tmp_path, "s.csv", text), TARGETS, None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"sale_id": "s1", "target_id": "t1", "amount": "1"}\n{oops\n', "line 2: not valid JSON"),
        ('{"sale_id": "s1", "target_id": "t1"}\n', r"line 1: lacks field\(s\) amount"),
        ('["s1", "t1", "1"]\n', "line 1: each line must be a JSON object"),
        ('{"sale_id": "s1", "target_id": "t1", "amount": true}\n', "amount must be a decimal number or string"),
        ('{"sale_id": "s1", "target_id": "t1", "amount": 1e2}\n', "not a plain decimal"),
        ('{"sale_id": "s1", "target_id": "t1", "amount": 1, "currency": 840}\n', "currency must be an ISO 4217 code"),
    ],
)
def test_jsonl_errors_name_the_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_ledger(write(tmp_path, "s.jsonl", text), TARGETS, None)


def test_missing_ledger_and_bad_option(tmp_path: Path) -> None:
    with pytest.raises(InputMissingError, match="does not exist"):
        read_ledger(tmp_path / "nope.csv", TARGETS, None)
    path = write(tmp_path, "s.csv", "sale_id,target_id,amount\ns1,t1,3\n")
    with pytest.raises(UsageError, match="--currency"):
        read_ledger(path, TARGETS, "XXX")


def test_non_utf8_ledger(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    path.write_bytes(b"sale_id,target_id,amount\n\xff\xfe,t1,1\n")
    with pytest.raises(DataError, match="not UTF-8"):
        read_ledger(path, TARGETS, None)
