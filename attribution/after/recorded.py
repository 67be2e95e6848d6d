"""A finished run read back: its manifest, its recipe and its verified inputs.

`royalty attribute` trusts nothing it cannot check: the training images must be the
ones run.json hashed, the model folder the one it recorded, and the values it reuses
(each sample's value for the reference set R) must match their recorded sha256.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from royalty.atomic import sha256_tree
from royalty.attribution.contract import run_folder
from royalty.attribution.contract.opened import OpenedRun, open_run
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.data.folders import Duplicates, ImageTable, inputs_manifest, load_training_data
from royalty.errors import DataError


@dataclass(frozen=True)
class Recorded:
    opened: OpenedRun  # run.json, and the model folder, values and steps verified
    config: TrainConfig
    train: ImageTable

    @property
    def run_dir(self) -> Path:
        return self.opened.run_dir

    @property
    def manifest(self) -> dict[str, Any]:
        return self.opened.manifest


def open_recorded(run_dir: Path, values_for: str | None = None) -> Recorded:
    """The run, its recipe and its training images, all checked against run.json.

    `values_for`: the values are required (the purpose names them in the error: "audit").
    """
    opened = open_run(run_dir, purpose=values_for or "read", need_values=values_for is not None, need_model=True)
    manifest = opened.manifest
    config = TrainConfig.from_json(manifest["config"], out=opened.run_dir)
    folder = Path(manifest.get("input_folders", {}).get("train") or config.data)
    # checked image by image against run.json below, not against today's duplicate rule
    train = load_training_data(folder, config.resolution, duplicates=Duplicates.UNCHECKED)
    check_inputs(train, manifest["inputs"]["train"], "training data")
    if config.model is not None and manifest["model_source"].get("sha256") != sha256_tree(config.model):
        raise DataError(f"the model the run started from, {config.model}, changed since training")
    return Recorded(opened, config, train)


def check_inputs(table: ImageTable, recorded: list[dict[str, Any]], what: str) -> None:
    """`table` must hold exactly the images run.json recorded for `what`, in the same order.

    Replaying or retraining on other images would describe another run than the one paid for.
    """
    found = inputs_manifest(table)
    if found == recorded:
        return
    if len(found) != len(recorded):
        detail = f"{len(found)} images where the run had {len(recorded)}"
    else:
        row = next(i for i, (a, b) in enumerate(zip(found, recorded)) if a != b)
        detail = f"first at {recorded[row]['file_name']}, image {row}"
    raise DataError(
        f"the {what} in {table.root} differ from what the run recorded in run.json ({detail}): "
        "images added, removed, renamed or changed since training"
    )


def reference_values(recorded: Recorded) -> torch.Tensor | None:
    """Each training sample's value for the run's reference set R, from its verified values.

    `value − value_specific` is the same for every target of a sample: R's value. None
    when the run has no reference (or no values).
    """
    path = recorded.opened.values_path  # verified when the run was opened
    if path is None:
        return None
    frame = pd.read_parquet(path)
    if run_folder.SPECIFIC_COLUMN not in frame.columns:
        return None
    base = (frame["value"] - frame[run_folder.SPECIFIC_COLUMN]).groupby(frame["sample_id"], sort=False).mean()
    try:
        ordered = base.loc[list(recorded.train.ids)]
    except KeyError as exc:
        raise DataError(f"{path} lacks training samples of the run: {exc}") from exc
    return torch.tensor(ordered.to_numpy(), dtype=torch.float64)
