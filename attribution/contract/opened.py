"""Opening a finished run folder: the one place every hash check of docs/design.md §4 runs.

`payout`, `report`, `attribute`, `generate` and `audit` all open a run here, so each
trusts the same things: run.json readable and of this format, and every file it reads
(values, steps, the model folder, an attribution's values) equal to what was recorded
when it was written. Torch-free, like the rest of the contract.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from royalty.atomic import sha256_file, sha256_tree
from royalty.attribution.contract import run_folder
from royalty.attribution.contract.attribution_folder import read_attribution
from royalty.attribution.contract.attribution_folder import MANIFEST as ATTRIBUTION_MANIFEST
from royalty.errors import DataError, InputMissingError

StepsOf = Literal["run", "attribution"]


@dataclass(frozen=True)
class OpenedRun:
    """A run folder whose manifest was read and whose files asked for were verified."""

    run_dir: Path
    manifest: dict[str, Any]
    # the values to read: the run's, or RUN/attributions/NAME's; None only where not required
    values_path: Path | None
    values_sha256: str | None
    attribution: str | None = None
    attribution_manifest: dict[str, Any] | None = None
    # the efficiency trace (steps.parquet), verified; an attribution's own where replay wrote one
    steps_path: Path | None = None
    steps_of: StepsOf = "run"
    model_dir: Path | None = None  # verified, where asked for


def open_run(
    run_dir: Path,
    attribution: str | None = None,
    *,
    purpose: str = "read",
    need_values: bool = True,
    need_model: bool = False,
) -> OpenedRun:
    """Read run.json and verify every file the caller will read.

    `purpose` completes the sentence of a missing-values error ("the run has no values to
    pay out"). The values and the steps are verified whenever they are on disk, needed or
    not (a few MB to hash); the model folder only where the caller loads it.
    """
    run_dir = Path(run_dir)
    manifest = run_folder.read_manifest(run_dir)
    model_dir = verify_model_folder(run_dir, manifest) if need_model else None
    run_steps = _steps(run_dir, manifest, run_folder.MANIFEST)
    if attribution is not None:
        folder, att_manifest, digest = read_attribution(run_dir, manifest, attribution)
        att_steps = _steps(folder, att_manifest, ATTRIBUTION_MANIFEST)
        return OpenedRun(
            run_dir, manifest, folder / run_folder.VALUES, digest, attribution, att_manifest,
            # replay records the efficiency trace on the new targets: that is the one to show
            steps_path=att_steps if att_steps is not None else run_steps,
            steps_of="attribution" if att_steps is not None else "run",
            model_dir=model_dir,
        )
    path = run_dir / run_folder.VALUES
    if not path.is_file():
        if need_values:
            raise InputMissingError(f"{path} is missing: the run has no values to {purpose}")
        return OpenedRun(run_dir, manifest, None, None, steps_path=run_steps, model_dir=model_dir)
    digest = run_folder.verify_output(run_dir, manifest, run_folder.VALUES)
    return OpenedRun(run_dir, manifest, path, digest, steps_path=run_steps, model_dir=model_dir)


def verify_model_folder(run_dir: Path, manifest: dict[str, Any]) -> Path:
    """RUN/model, hashed as a tree and compared with run.json."""
    model = Path(run_dir) / run_folder.MODEL_DIR
    if not model.is_dir():
        raise InputMissingError(f"{model} is missing: {run_dir} is not a finished royalty run")
    if sha256_tree(model) != manifest.get("outputs", {}).get(run_folder.MODEL_DIR):
        raise DataError(f"{model} does not match its manifest: the run folder was modified after training")
    return model


def _steps(folder: Path, manifest: dict[str, Any], manifest_name: str) -> Path | None:
    """steps.parquet where the manifest records one, verified; None where none was recorded."""
    recorded = (manifest.get("outputs") or {}).get(run_folder.STEPS)
    if recorded is None:
        return None
    path = folder / run_folder.STEPS
    if not path.is_file():
        raise InputMissingError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != recorded:
        raise DataError(
            f"{path} does not match {manifest_name} (sha256 {actual[:12]}…, recorded {str(recorded)[:12]}…): "
            "it was modified after it was written"
        )
    return path
