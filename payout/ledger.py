"""The sales ledger: which generated content earned how much.

CSV (header row) or JSON Lines, one sale per row: `sale_id`, `target_id`, `amount`, and
optionally `currency` and `date`. Other columns are ignored. Every problem is reported
with the file and line of the row at fault, because the person fixing it has the
spreadsheet open, not our data structures.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from royalty.errors import DataError, InputMissingError, UsageError
from royalty.payout.currency import AmountError, Currency, currency, format_minor, parse_minor

REQUIRED = ("sale_id", "target_id", "amount")


@dataclass(frozen=True)
class Sale:
    line: int
    sale_id: str
    target_id: str
    amount: int  # minor units of the statement currency
    date: str | None


@dataclass(frozen=True)
class ExcludedCurrency:
    code: str
    count: int
    amount: str  # decimal string in that currency


@dataclass(frozen=True)
class Ledger:
    currency: Currency
    sha256: str  # of the file's bytes as read, so the statement names exactly what was paid
    sales: tuple[Sale, ...]
    excluded: tuple[ExcludedCurrency, ...]  # sales in other currencies, left out on request


@dataclass(frozen=True)
class _RawRow:
    line: int
    fields: dict[str, Any]


def read_ledger(path: Path, targets: frozenset[str], currency_option: str | None) -> Ledger:
    """Parse and check the ledger.

    `currency_option` is the --currency the user gave (None when not given). A ledger
    in one currency needs no option; a ledger mixing currencies is refused unless the
    option names the one this statement pays, and the others are reported as excluded.
    """
    path = Path(path)
    if not path.is_file():
        raise InputMissingError(f"sales ledger {path} does not exist")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputMissingError(f"cannot read sales ledger {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text: {exc}") from exc
    rows = list(_json_lines(path, text) if _is_jsonl(path, text) else _csv_rows(path, text))
    if not rows:
        raise DataError(f"{path} holds no sales")

    chosen = _choose_currency(path, rows, currency_option)
    sales: list[Sale] = []
    seen: dict[str, int] = {}
    excluded: dict[str, list[int]] = {}
    for row in rows:
        sale_id = _text(row, "sale_id", f"{path} line {row.line}")
        where = _where(path, row)
        if sale_id in seen:
            raise DataError(f"{where}: duplicate sale_id, first used on line {seen[sale_id]}")
        seen[sale_id] = row.line
        target_id = _text(row, "target_id", where)
        row_currency = _row_currency(row, where) or chosen
        amount_text = _amount_text(row, where)
        try:
            amount = parse_minor(amount_text, row_currency)
        except AmountError as exc:
            raise DataError(f"{where}: amount {exc}") from exc
        date = _date(row, where)
        if row_currency != chosen:
            excluded.setdefault(row_currency.code, []).append(amount)
            continue
        if target_id not in targets:
            raise DataError(f"{where}: target_id {target_id!r} is not a target of this run")
        sales.append(Sale(row.line, sale_id, target_id, amount, date))
    if not sales:
        raise DataError(f"{path} holds no sales in {chosen.code}")
    return Ledger(
        chosen,
        hashlib.sha256(data).hexdigest(),
        tuple(sales),
        tuple(
            ExcludedCurrency(code, len(amounts), _format(sum(amounts), code))
            for code, amounts in sorted(excluded.items())
        ),
    )


def _format(minor: int, code: str) -> str:
    return format_minor(minor, currency(code))


def _is_jsonl(path: Path, text: str) -> bool:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return True
    if suffix == ".csv":
        return False
    return text.lstrip().startswith("{")


def _csv_rows(path: Path, text: str) -> Iterator[_RawRow]:
    reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
    try:
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise DataError(f"{path} line 1: header lacks column(s) {', '.join(missing)} (has {', '.join(header)})")
        for record in reader:
            # line_num is where the record ends (DictReader skips blank lines itself);
            # for the usual one-line record that is its line.
            line = reader.line_num
            if None in record:
                raise DataError(f"{path} line {line}: more fields than the header has")
            if all((v or "").strip() == "" for v in record.values()):
                continue
            yield _RawRow(line, {k: v for k, v in record.items() if v is not None})
    except csv.Error as exc:
        raise DataError(f"{path} line {reader.line_num}: not valid CSV: {exc}") from exc


def _json_lines(path: Path, text: str) -> Iterator[_RawRow]:
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            # Keep the literal digits of JSON numbers: 0.1 must stay "0.1", not a float.
            record = json.loads(line, parse_float=_Literal, parse_int=_Literal)
        except ValueError as exc:
            raise DataError(f"{path} line {number}: not valid JSON: {exc}") from exc
        if not isinstance(record, dict):
            raise DataError(f"{path} line {number}: each line must be a JSON object")
        missing = [c for c in REQUIRED if c not in record]
        if missing:
            raise DataError(f"{path} line {number}: lacks field(s) {', '.join(missing)}")
        yield _RawRow(number, record)


def _where(path: Path, row: _RawRow) -> str:
    sale_id = row.fields.get("sale_id")
    if isinstance(sale_id, str) and sale_id.strip():
        return f"{path} line {row.line} (sale_id {sale_id.strip()!r})"
    return f"{path} line {row.line}"


class _Literal(str):
    """A JSON number kept as the text it was written as."""


def _text(row: _RawRow, name: str, where: str) -> str:
    value = row.fields.get(name)
    if isinstance(value, _Literal):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: {name} must be a non-empty string")
    return value.strip()


def _amount_text(row: _RawRow, where: str) -> str:
    value = row.fields.get("amount")
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: amount must be a decimal number or string, got {value!r}")
    return value


def _row_currency(row: _RawRow, where: str) -> Currency | None:
    value = row.fields.get("currency")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or isinstance(value, _Literal):
        raise DataError(f"{where}: currency must be an ISO 4217 code, got {value!r}")
    try:
        return currency(value)
    except AmountError as exc:
        raise DataError(f"{where}: {exc}") from exc


def _date(row: _RawRow, where: str) -> str | None:
    value = row.fields.get("date")
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str) and not isinstance(value, _Literal):
        text = value.strip()
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            try:
                return dt.datetime.fromisoformat(text).date().isoformat()
            except ValueError:
                pass
    raise DataError(f"{where}: date {value!r} is not an ISO 8601 date (YYYY-MM-DD)")


def _choose_currency(path: Path, rows: list[_RawRow], option: str | None) -> Currency:
    if option is not None:
        try:
            return currency(option)
        except AmountError as exc:
            raise UsageError(f"--currency: {exc}") from exc
    first: tuple[Currency, int] | None = None
    for row in rows:
        found = _row_currency(row, _where(path, row))
        if found is None:
            continue
        if first is None:
            first = (found, row.line)
        elif found != first[0]:
            raise DataError(
                f"{path} line {row.line}: currency {found.code} differs from {first[0].code} on line "
                f"{first[1]}; a statement pays one currency — pass --currency CODE to pay the sales in "
                "that currency (the others are reported as excluded)"
            )
    if first is None:
        return currency("USD")
    return first[0]
