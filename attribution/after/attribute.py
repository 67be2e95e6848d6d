"""`royalty attribute` as a library: value a run's training images for new target images.

The result lives next to the run's own values, in `RUN/attributions/NAME/`:
`values.parquet` (the columns of the run's values.parquet), `steps.parquet` (replay
only: the efficiency trace on the new targets) and `attribution.json` (what was
attributed, how, and the sha256 of each file), so `royalty payout RUN --attribution NAME`
can pay for the new images with the same checks as the run's own values.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from royalty import __version__
from royalty.atomic import atomic_path, sha256_file, write_text
from royalty.attribution.contract import run_folder
from royalty.attribution.contract.attribution_folder import MANIFEST, NAME_PATTERN, attribution_dir
from royalty.attribution.data.folders import inputs_manifest, load_targets
from royalty.attribution.after.recorded import open_recorded, reference_values
from royalty.attribution.training.trajectory import ProgressFn
from royalty.attribution.training.values_table import steps_frame, values_frame
from royalty.errors import OutputError, UsageError

MODES = ("replay", "checkpoints")


@dataclass(frozen=True)
class AttributeConfig:
    run: Path
    images: Path
    mode: str = "replay"
    name: str | None = None  # default: the images folder's name
    force: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.name is not None and not NAME_PATTERN.match(self.name):
            raise UsageError(f"--name {self.name!r}: use letters, digits, '.', '_' and '-' (at most 100)")

    @property
    def label(self) -> str:
        name = self.name if self.name is not None else Path(self.images).resolve().name
        if not NAME_PATTERN.match(name):
            raise UsageError(f"the folder name {name!r} cannot name an attribution: give --name")
        return name


def attribute(config: AttributeConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Check everything, compute the values, write the attribution folder; return the summary."""
    started = time.monotonic()
    name = config.label
    out = attribution_dir(config.run, name)
    if out.exists() and not config.force:
        raise OutputError(f"{out} exists: choose another --name, or --force to replace it")
    recorded = open_recorded(config.run)
    targets = load_targets(config.images, recorded.config.resolution)
    reference = reference_values(recorded)
    if config.mode == "replay":
        from royalty.attribution.after.replay import replay

        result = replay(recorded, targets, progress)
    else:
        from royalty.attribution.after.from_checkpoints import from_checkpoints

        result = from_checkpoints(recorded, targets, progress)
    frame = values_frame(recorded.train.ids, recorded.train.owners, targets.ids, result.first, result.second, reference)
    doc = {
        "format_version": run_folder.FORMAT_VERSION,
        "name": name,
        "run_id": recorded.manifest["run_id"],
        "mode": config.mode,
        "order": recorded.config.order if config.mode == "replay" else 1,
        # how the replayed second order took its curvature (docs/design.md §1.6); null at first order
        "curvature": recorded.config.curvature if config.mode == "replay" and recorded.config.order == 2 else None,
        "royalty_version": __version__,
        "images_folder": str(Path(config.images).resolve()),
        "targets": inputs_manifest(targets),
        "reference": "run" if reference is not None else None,
        "replayed_weights_sha256": result.weights_sha256,
        "checkpoint_steps": None if config.mode == "replay" else sorted(
            int(k[5:13]) for k in (recorded.manifest.get("checkpoints") or {})
        ),
        "seconds": round(time.monotonic() - started, 3),
    }
    _write(out, frame, result.log, doc)
    return {
        "format_version": run_folder.FORMAT_VERSION,
        "name": name,
        "out": str(out),
        "run_id": doc["run_id"],
        "mode": config.mode,
        "targets": len(targets),
        "train_images": len(recorded.train),
        "seconds": doc["seconds"],
    }


def _write(out: Path, frame: pd.DataFrame, log: list[dict[str, float]], doc: dict[str, Any]) -> None:
    """The whole folder is written aside, then renamed into place: never half there."""
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as exc:
        raise OutputError(f"cannot create {tmp}: {exc.strerror or exc}") from exc
    with atomic_path(tmp / run_folder.VALUES) as path:
        frame.to_parquet(path, index=False)
    outputs = {run_folder.VALUES: sha256_file(tmp / run_folder.VALUES)}
    if log:
        with atomic_path(tmp / run_folder.STEPS) as path:
            steps_frame(log).to_parquet(path, index=False)
        outputs[run_folder.STEPS] = sha256_file(tmp / run_folder.STEPS)
    write_text(tmp / MANIFEST, json.dumps({**doc, "outputs": outputs}, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
