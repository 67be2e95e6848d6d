"""Reading what a report shows: the run's (or an attribution's) values, verified first.

A report is evidence for a payout, so the values file is checked against its manifest
(run.json, or attribution.json for `--attribution`) before a single value is read — the
same guarantee `royalty payout` gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from royalty.attribution.contract.attribution_folder import MANIFEST as ATTRIBUTION_MANIFEST
from royalty.attribution.contract.opened import open_run
from royalty.errors import DataError
from royalty.payout.policy import Basis
from royalty.payout.values import BASIS_COLUMN, RunValues, read_values_table, values_from_table



@dataclass(frozen=True)
class ImageRecord:
    """One image as a manifest lists it: where it is and the hash it must still have."""

    id: str
    file_name: str
    sha256: str | None
    owner: str | None


@dataclass(frozen=True)
class Values:
    """A validated values table: integer codes from payout plus the per-row sample ids."""

    coded: RunValues  # owners/targets sorted, codes per row, the basis column as float64
    sample_ids: np.ndarray  # object array of str, one per row
    path: Path
    sha256: str


@dataclass(frozen=True)
class ReportSource:
    """Everything read from the run folder, verified; image files are checked later."""

    run_dir: Path
    manifest: dict[str, Any]
    attribution: str | None
    attribution_manifest: dict[str, Any] | None
    values: Values
    steps: pa.Table | None
    steps_of: str  # "run" or "attribution": whose targets the efficiency trace is measured on
    train: dict[str, ImageRecord]
    targets: dict[str, ImageRecord]
    train_folder: Path | None
    targets_folder: Path | None


def load_source(run_dir: Path, basis: Basis, attribution: str | None = None) -> ReportSource:
    run = open_run(run_dir, attribution, purpose="report")
    assert run.values_path is not None and run.values_sha256 is not None  # opened with need_values
    manifest = run.manifest
    train_folder, targets_folder = _input_folders(manifest)
    train = _records(manifest.get("inputs", {}).get("train"), "inputs.train")
    if run.attribution_manifest is None:
        targets = _records(manifest.get("inputs", {}).get("targets"), "inputs.targets")
    else:
        where = f"{run.values_path.parent / ATTRIBUTION_MANIFEST} targets"
        targets = _records(run.attribution_manifest.get("targets"), where)
        folder = run.attribution_manifest.get("images_folder")
        targets_folder = Path(folder) if isinstance(folder, str) and folder else None
    return ReportSource(
        run_dir=run.run_dir,
        manifest=manifest,
        attribution=attribution,
        attribution_manifest=run.attribution_manifest,
        values=_read_values(run.values_path, run.values_sha256, basis),
        steps=_read_steps(run.steps_path) if run.steps_path is not None else None,
        steps_of=run.steps_of,
        train=train,
        targets=targets,
        train_folder=train_folder,
        targets_folder=targets_folder,
    )


def _input_folders(manifest: dict[str, Any]) -> tuple[Path | None, Path | None]:
    """Absolute image folders: run.json's input_folders, else the config's paths.

    Older runs only record the paths as typed at train time; those are resolved against
    the current directory, which is right when the report runs where training ran.
    """
    recorded = manifest.get("input_folders")
    if isinstance(recorded, dict):
        return _folder(recorded.get("train")), _folder(recorded.get("targets"))
    config = manifest.get("config", {})
    return _folder(config.get("data")), _folder(config.get("targets"))


def _folder(value: object) -> Path | None:
    if not isinstance(value, str) or not value:
        return None
    return Path(value).expanduser().resolve()


def _records(raw: object, where: str) -> dict[str, ImageRecord]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise DataError(f"{where} in the manifest is not a list of images")
    records: dict[str, ImageRecord] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("id"), str) or not isinstance(item.get("file_name"), str):
            raise DataError(f"{where}[{i}] in the manifest lacks an id or file_name")
        sha = item.get("sha256")
        owner = item.get("owner")
        records[item["id"]] = ImageRecord(
            id=item["id"],
            file_name=item["file_name"],
            sha256=sha if isinstance(sha, str) and sha else None,
            owner=owner if isinstance(owner, str) and owner else None,
        )
    return records


def _read_values(path: Path, digest: str, basis: Basis) -> Values:
    column = BASIS_COLUMN[basis]
    table = read_values_table(path, basis)
    # payout's validation: strings, finite numbers, one owner per sample, no duplicate pairs.
    coded = values_from_table(table, column, path)
    sample_ids = np.asarray(table.column("sample_id").cast(pa.string()).to_pylist(), dtype=object)
    return Values(coded=coded, sample_ids=sample_ids, path=path, sha256=digest)


def _read_steps(path: Path) -> pa.Table:
    """A verified steps.parquet, with the columns the efficiency panel reads."""
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path} cannot be read: {exc}") from exc
    missing = [c for c in ("step", "target_loss_before", "target_loss_after", "value_sum") if c not in table.column_names]
    if missing:
        raise DataError(f"{path} lacks column(s) {', '.join(missing)}")
    return table
