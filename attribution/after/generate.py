"""`royalty generate` as a library: sample images from a run's model, each with an id.

Each image has its own seed (`--seed` + its index), so any one image can be drawn again
alone. The output folder is a targets folder (`metadata.csv` with `target_id`), ready
for `royalty attribute`.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import DDIMPipeline, DDIMScheduler, DDPMPipeline
from PIL import Image

from royalty.atomic import write_bytes, write_text
from royalty.attribution.contract import run_folder
from royalty.attribution.training.config import check_device_name
from royalty.attribution.training.device import resolve_device, use_device
from royalty.attribution.model.diffusion import load_model
from royalty.attribution.contract.opened import open_run
from royalty.attribution.training.trajectory import ProgressFn
from royalty.errors import OutputError, UsageError

SCHEDULERS = ("ddim", "ddpm")
METADATA_COLUMNS = ("file_name", "target_id", "seed", "scheduler", "steps", "run_id")


@dataclass(frozen=True)
class GenerateConfig:
    run: Path
    out: Path
    num: int
    seed: int = 0
    steps: int = 50
    scheduler: str = "ddim"
    batch_size: int = 16
    force: bool = False
    device: str = "cpu"

    def __post_init__(self) -> None:
        check_device_name(self.device)
        if self.num < 1:
            raise UsageError(f"--num must be at least 1, got {self.num}")
        if self.seed < 0:
            raise UsageError(f"--seed must not be negative, got {self.seed}")
        if self.scheduler not in SCHEDULERS:
            raise UsageError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        if not 1 <= self.steps <= 1000:
            raise UsageError(f"--steps must be in 1..1000, got {self.steps}")
        if self.batch_size < 1:
            raise UsageError(f"--batch-size must be at least 1, got {self.batch_size}")


def generate(config: GenerateConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    opened = open_run(config.run, need_values=False, need_model=True)
    manifest, model = opened.manifest, opened.model_dir
    assert model is not None
    device = resolve_device(config.device)
    _check_out(config.out, config.force)
    use_device(device)
    unet, scheduler = load_model(model)
    if config.scheduler == "ddim":
        pipe = DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    else:
        pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    rows = []
    for lo in range(0, config.num, config.batch_size):
        seeds = list(range(config.seed + lo, config.seed + min(lo + config.batch_size, config.num)))
        # one generator per image: an image depends on its own seed, not on its batch-mates';
        # CPU generators on every device: a seed draws the same starting noise everywhere
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        kwargs = {"eta": 0.0} if config.scheduler == "ddim" else {}
        images = pipe(batch_size=len(seeds), generator=generators, num_inference_steps=config.steps, output_type="np", **kwargs).images
        for s, array in zip(seeds, images):
            target_id = f"gen-{s:08d}"
            buf = io.BytesIO()
            Image.fromarray((array * 255).round().clip(0, 255).astype("uint8")).save(buf, format="PNG")
            write_bytes(config.out / f"{target_id}.png", buf.getvalue())
            rows.append({
                "file_name": f"{target_id}.png", "target_id": target_id, "seed": s,
                "scheduler": config.scheduler, "steps": config.steps, "run_id": manifest["run_id"],
            })
        if progress is not None:
            progress(len(rows), config.num, float("nan"))
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(METADATA_COLUMNS), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(config.out / "metadata.csv", text.getvalue())  # last: the folder is complete once it exists
    return {
        "format_version": run_folder.FORMAT_VERSION,
        "out": str(config.out),
        "run_id": manifest["run_id"],
        "images": len(rows),
        "scheduler": config.scheduler,
        "steps": config.steps,
        "seeds": [rows[0]["seed"], rows[-1]["seed"]],
        "device": str(device),
    }


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputError(f"--out {out} is not empty; choose a new folder or --force to replace its images")
        if not (out / "metadata.csv").is_file():
            raise OutputError(f"--out {out} does not hold images from `royalty generate`; --force only replaces those")
        shutil.rmtree(out)
