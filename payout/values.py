"""Reading a run's values.parquet for payout: verified, validated, integer-coded.

The file is checked against run.json before a single value is read, because a payout
computed from a modified values file would be a statement nobody can audit.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from royalty.attribution.contract import run_folder
from royalty.attribution.contract.opened import OpenedRun
from royalty.errors import DataError, UsageError
from royalty.payout.policy import Basis

BASIS_COLUMN = {Basis.RAW: "value", Basis.SPECIFIC: run_folder.SPECIFIC_COLUMN}


@dataclass(frozen=True)
class RunValues:
    """values.parquet as integer codes; owners and targets are sorted ascending."""

    owners: tuple[str, ...]
    targets: tuple[str, ...]
    owner_codes: np.ndarray
    target_codes: np.ndarray
    values: np.ndarray
    images: tuple[int, ...]  # distinct sample_ids per owner
    column: str


def load_values(run: OpenedRun, basis: Basis) -> RunValues:
    """The basis's column of the run's (or attribution's) verified values, integer-coded."""
    assert run.values_path is not None  # opened with need_values
    table = read_values_table(run.values_path, basis)
    return values_from_table(table, BASIS_COLUMN[basis], run.values_path)


def read_values_table(path: Path, basis: Basis) -> pa.Table:
    """sample_id, owner, target_id and the basis's column of a values.parquet, or a clear error."""
    column = BASIS_COLUMN[basis]
    try:
        names = pq.read_schema(path).names
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path} is not a readable parquet file: {exc}") from exc
    if basis is Basis.SPECIFIC and column not in names:
        raise UsageError(
            f"--basis specific needs the {column} column, and {path} has none: the run was trained "
            "without a reference set (train with --reference DIR, or use --basis raw)"
        )
    missing = [c for c in ("sample_id", "owner", "target_id", column) if c not in names]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
    try:
        return pq.read_table(path, columns=["sample_id", "owner", "target_id", column])
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc


def values_from_table(table: pa.Table, column: str, path: Path | str) -> RunValues:
    """Validate and integer-code an in-memory values table (`path` names it in errors)."""
    if table.num_rows == 0:
        raise DataError(f"{path} has no rows: there is nothing to pay out")
    owners, owner_codes = _sorted_codes(table, "owner", path)
    targets, target_codes = _sorted_codes(table, "target_id", path)
    _, sample_codes = _sorted_codes(table, "sample_id", path, sort=False)
    values = _finite_values(table, column, path)
    images = _images_per_owner(table, path, sample_codes, owner_codes, len(owners))
    _no_duplicate_pairs(table, path, sample_codes, target_codes, len(targets))
    return RunValues(owners, targets, owner_codes, target_codes, values, images, column)


def _row(table: pa.Table, i: int) -> str:
    return (
        f"row {i} (sample_id {table.column('sample_id')[i].as_py()!r}, "
        f"target_id {table.column('target_id')[i].as_py()!r})"
    )


def _sorted_codes(table: pa.Table, name: str, path: Path | str, sort: bool = True) -> tuple[tuple[str, ...], np.ndarray]:
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
        raise DataError(f"{path}: column {name} must hold strings, not {col.type}")
    arr = col.combine_chunks()
    if arr.null_count:
        i = int(pc.index(pc.is_null(arr), True).as_py())
        raise DataError(f"{path} row {i}: {name} is empty")
    encoded = pc.dictionary_encode(arr)
    labels: list[str] = encoded.dictionary.to_pylist()
    indices = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if "" in labels:
        i = int(np.flatnonzero(indices == labels.index(""))[0])
        raise DataError(f"{path} {_row(table, i)}: {name} is empty")
    if not sort:
        return tuple(labels), indices
    order = sorted(range(len(labels)), key=labels.__getitem__)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels), dtype=np.int64)
    return tuple(labels[i] for i in order), rank[indices]


def _finite_values(table: pa.Table, column: str, path: Path | str) -> np.ndarray:
    col = table.column(column)
    if not (pa.types.is_floating(col.type) or pa.types.is_integer(col.type)):
        raise DataError(f"{path}: column {column} must be numeric, not {col.type}")
    arr = col.combine_chunks()
    if arr.null_count:
        i = int(pc.index(pc.is_null(arr), True).as_py())
        raise DataError(f"{path} {_row(table, i)}: {column} is empty")
    values = arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path} {_row(table, i)}: {column} is {float(values[i])!r}, not a finite number")
    return values


def _images_per_owner(
    table: pa.Table, path: Path | str, sample_codes: np.ndarray, owner_codes: np.ndarray, n_owners: int
) -> tuple[int, ...]:
    owner_of = np.full(int(sample_codes.max()) + 1, -1, dtype=np.int64)
    owner_of[sample_codes] = owner_codes
    clash = owner_of[sample_codes] != owner_codes
    if clash.any():
        i = int(np.flatnonzero(clash)[0])
        raise DataError(f"{path} {_row(table, i)}: the same sample_id is listed under two owners")
    return tuple(int(n) for n in np.bincount(owner_of, minlength=n_owners))


def _no_duplicate_pairs(
    table: pa.Table, path: Path | str, sample_codes: np.ndarray, target_codes: np.ndarray, n_targets: int
) -> None:
    keys = sample_codes * n_targets + target_codes
    seen = np.zeros(len(keys), dtype=bool)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    seen[order[1:]] = sorted_keys[1:] == sorted_keys[:-1]
    if seen.any():
        i = int(np.flatnonzero(seen)[0])
        raise DataError(f"{path} {_row(table, i)}: the sample has two rows for this target")
