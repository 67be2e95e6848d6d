"""metadata.csv / metadata.jsonl of an image folder: read, every cell a string, every row numbered.

Row numbers: for metadata.csv, "row N" is the N-th record after the header, counting from
1 (blank records count, so without quoted line breaks row N sits on line N + 1); for
metadata.jsonl, "line N" is the physical line, counting from 1.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from royalty.errors import DataError

METADATA_NAMES = ("metadata.csv", "metadata.jsonl")

# Columns whose values identify or pay someone: they must be plain scalars in JSONL.
_KEY_COLUMNS = ("file_name", "owner", "sample_id", "target_id")


@dataclass(frozen=True)
class Metadata:
    """A folder's metadata table, every cell a string, with the row numbers messages use."""

    path: Path
    frame: pd.DataFrame  # all cells str, blank records dropped, index 0..n-1
    numbers: tuple[int, ...]  # row (CSV) or line (JSONL) number of each frame row

    @property
    def unit(self) -> str:
        return "line" if self.path.suffix == ".jsonl" else "row"

    def cell(self, i: int, column: str) -> str:
        return self.frame.at[i, column] if column in self.frame.columns else ""

    def where(self, i: int) -> str:
        return f"{self.path} {self.short(i)}"

    def short(self, i: int) -> str:
        base = f"{self.unit} {self.numbers[i]}"
        file_name = self.cell(i, "file_name")
        return f"{base} (file_name {file_name!r})" if file_name else base


def read_metadata(root: Path) -> Metadata | None:
    present = [root / name for name in METADATA_NAMES if (root / name).is_file()]
    if len(present) > 1:
        raise DataError(
            f"{root} holds both metadata.csv and metadata.jsonl; keep one, "
            "so it is unambiguous which one lists the images"
        )
    if not present:
        return None
    path = present[0]
    try:
        frame, numbers = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start}: {exc.reason})") from exc
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return _drop_blank_records(path, frame, numbers)


def _read_csv(path: Path) -> tuple[pd.DataFrame, list[int]]:
    _check_csv_header(path)
    try:
        # All strings, no NA guessing: an id "007" or an owner "NA" must survive as written.
        # skip_blank_lines=False keeps row numbers aligned with the file for messages.
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            skip_blank_lines=False,
            index_col=False,
            encoding="utf-8-sig",  # spreadsheets write a byte-order mark
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame(), []
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{path} is not a valid CSV file: {exc}") from exc
    return frame.fillna(""), list(range(1, len(frame) + 1))


def _check_csv_header(path: Path) -> None:
    # pandas silently renames a repeated column ("owner", "owner.1"); a second owner
    # column is a spreadsheet mistake that would otherwise pay the wrong person.
    with open(path, encoding="utf-8-sig", newline="") as fh:
        header = next(csv.reader(fh), [])
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(f"{path} header repeats column(s) {', '.join(map(repr, repeated))}")


def _read_jsonl(path: Path) -> tuple[pd.DataFrame, list[int]]:
    records: list[dict[str, str]] = []
    numbers: list[int] = []
    with open(path, encoding="utf-8-sig") as fh:
        for number, line in enumerate(fh, start=1):
            if line.strip():
                records.append(_jsonl_record(path, number, line))
                numbers.append(number)
    columns = list(dict.fromkeys(key for record in records for key in record))
    rows = [[record.get(column, "") for column in columns] for record in records]
    return pd.DataFrame(rows, columns=columns, dtype=str), numbers


def _jsonl_record(path: Path, number: int, line: str) -> dict[str, str]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} line {number}: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(obj, dict):
        raise DataError(f"{path} line {number}: expected a JSON object {{...}}, got {_json_kind(obj)}")
    for key in _KEY_COLUMNS:
        if isinstance(obj.get(key), (dict, list)):
            raise DataError(f"{path} line {number}: {key} must be a string, got {_json_kind(obj[key])}")
    return {str(key): _json_cell(value) for key, value in obj.items()}


def _json_cell(value: object) -> str:
    # Same cell type as the CSV reader (str), so both formats behave identically downstream.
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _json_kind(value: object) -> str:
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    return kinds.get(type(value), "null" if value is None else "a number")


def _drop_blank_records(path: Path, frame: pd.DataFrame, numbers: Sequence[int]) -> Metadata:
    # A trailing empty line or a spreadsheet's empty row is not a data row.
    if len(frame.columns) == 0 or len(frame) == 0:
        return Metadata(path, frame.reset_index(drop=True), tuple(numbers))
    keep = ~frame.apply(lambda row: all(not str(cell).strip() for cell in row), axis=1)
    kept_numbers = tuple(n for n, k in zip(numbers, keep) if k)
    return Metadata(path, frame[keep.to_numpy()].reset_index(drop=True), kept_numbers)


def require_columns(meta: Metadata, required: Sequence[str]) -> None:
    for column in required:
        if column not in meta.frame.columns:
            found = ", ".join(map(repr, meta.frame.columns)) or "none"
            raise DataError(f"{meta.path} has no {column!r} column (columns found: {found})")


# ------------------------------------------------------------------------ row checks
