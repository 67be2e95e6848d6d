"""The run folder contract of docs/design.md §4: file names, manifest, integrity checks.

Everything that reads or writes a run folder goes through here so the names and the
manifest layout live in one place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from royalty.atomic import sha256_file, sha256_tree, write_text
from royalty.errors import DataError, InputMissingError

FORMAT_VERSION = 1

MANIFEST = "run.json"
VALUES = "values.parquet"
STEPS = "steps.parquet"
MODEL_DIR = "model"
CHECKPOINTS_DIR = "checkpoints"

VALUE_COLUMNS = (
    "sample_id",
    "owner",
    "target_id",
    "value",
    "value_first_order",
    "value_second_order",
)
SPECIFIC_COLUMN = "value_specific"
# steps.parquet, the ledger (docs/design.md §1.6): per step, before − after =
# value_sum + unattributed + residual, with unattributed = decay + carried + beyond
STEP_COLUMNS = (
    "step",
    "lr",
    "train_loss",
    "target_loss_before",
    "target_loss_after",
    "value_sum",
    "unattributed",
    "unattributed_decay",
    "unattributed_carried",
    "unattributed_beyond",
    "residual",
)


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    """Write run.json atomically; keys sorted so the file is reproducible."""
    write_text(run_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if Path(run_dir).exists() and not Path(run_dir).is_dir():
        # exit 66 as for any RUN that is not a run: there is no run folder at that path
        raise InputMissingError(
            f"{run_dir} is a file, not a run folder: give the folder `royalty train --out` wrote (it holds {MANIFEST})"
        )
    if not Path(run_dir).is_dir():
        raise InputMissingError(f"run folder {run_dir} does not exist")
    if not path.is_file():
        raise InputMissingError(f"{path} is missing: {run_dir} is not a finished royalty run")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or "format_version" not in manifest:
        raise DataError(f"{path} has no format_version: not a royalty run manifest")
    if manifest["format_version"] != FORMAT_VERSION:
        raise DataError(
            f"{path} has format_version {manifest['format_version']!r}; this royalty reads {FORMAT_VERSION}"
        )
    return manifest


def output_hashes(run_dir: Path) -> dict[str, str]:
    """sha256 of each output file of a finished run (the model folder hashed as a tree)."""
    run_dir = Path(run_dir)
    hashes = {name: sha256_file(run_dir / name) for name in (VALUES, STEPS) if (run_dir / name).is_file()}
    if (run_dir / MODEL_DIR).is_dir():
        hashes[MODEL_DIR] = sha256_tree(run_dir / MODEL_DIR)
    return hashes


def verify_output(run_dir: Path, manifest: dict[str, Any], name: str) -> str:
    """Check one output file against the manifest's sha256; return the hash."""
    path = Path(run_dir) / name
    if not path.is_file():
        raise InputMissingError(f"{path} is missing")
    recorded = manifest.get("outputs", {}).get(name)
    actual = sha256_file(path)
    if recorded != actual:
        raise DataError(
            f"{path} does not match its manifest (sha256 {actual[:12]}…, recorded "
            f"{str(recorded)[:12]}…): the run folder was modified after training"
        )
    return actual
