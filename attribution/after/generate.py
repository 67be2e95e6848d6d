"""`royalty generate` as a library: sample images from a run's model, each with an id.

Each image has its own seed (`--seed` + its index), so any one image can be drawn again
alone. The output folder is a targets folder (`metadata.csv` with `target_id`, and for a
text-to-image run each image's prompt in the run's caption column), ready for
`royalty attribute`, which values each image under its own prompt.
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

from royalty.atomic import sha256_tree, write_bytes, write_text
from royalty.attribution.contract import run_folder
from royalty.attribution.training.config import check_device_name
from royalty.attribution.training.device import resolve_device, use_device
from royalty.attribution.model.diffusion import load_model
from royalty.attribution.contract.opened import open_run
from royalty.attribution.training.trajectory import ProgressFn
from royalty.errors import DataError, OutputError, UsageError

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
    prompts: tuple[str, ...] = ()  # text-to-image runs: `num` images per prompt
    guidance_scale: float = 1.0  # classifier-free guidance; 1: none (the prompt alone)

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
        if any(not p.strip() for p in self.prompts):
            raise UsageError("--prompt: a prompt is empty")
        if not self.guidance_scale >= 1.0:
            raise UsageError(f"--guidance-scale must be at least 1 (1: no guidance), got {self.guidance_scale}")


def generate(config: GenerateConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    opened = open_run(config.run, need_values=False, need_model=True)
    manifest, model = opened.manifest, opened.model_dir
    assert model is not None
    text_to_image = manifest.get("model_source", {}).get("kind") == "text-to-image-pipeline"
    if text_to_image and not config.prompts:
        raise UsageError("the run fine-tuned a text-to-image model: give --prompt TEXT (repeatable) or --prompts FILE")
    if config.prompts and not text_to_image:
        raise UsageError("--prompt: the run's model is unconditional (a pixel UNet); it takes no prompts")
    device = resolve_device(config.device)
    _check_out(config.out, config.force)
    use_device(device)
    if text_to_image:
        pipe, resolution = _text_to_image_pipeline(manifest, model, config.scheduler), int(manifest["config"]["resolution"])
    else:
        pipe, resolution = _pixel_pipeline(model, config.scheduler), 0
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    # image i: prompt i // num (one prompt for a pixel model: none), seed + i
    jobs = [(p, config.seed + i) for i, p in enumerate(p for p in (config.prompts or ("",)) for _ in range(config.num))]
    caption = caption_column_of(manifest)
    rows = []
    for lo in range(0, len(jobs), config.batch_size):
        batch = jobs[lo : lo + config.batch_size]
        seeds = [s for _, s in batch]
        # one generator per image: an image depends on its own seed, not on its batch-mates';
        # CPU generators on every device: a seed draws the same starting noise everywhere
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        kwargs: dict[str, Any] = {"eta": 0.0} if config.scheduler == "ddim" else {}
        if text_to_image:
            kwargs.update(prompt=[p for p, _ in batch], height=resolution, width=resolution, guidance_scale=config.guidance_scale)
        else:
            kwargs.update(batch_size=len(seeds))
        images = _sample(pipe, generators, config.steps, kwargs)
        for (prompt, s), array in zip(batch, images):
            target_id = f"gen-{s:08d}"
            buf = io.BytesIO()
            Image.fromarray((array * 255).round().clip(0, 255).astype("uint8")).save(buf, format="PNG")
            write_bytes(config.out / f"{target_id}.png", buf.getvalue())
            row = {
                "file_name": f"{target_id}.png", "target_id": target_id, "seed": s,
                "scheduler": config.scheduler, "steps": config.steps, "run_id": manifest["run_id"],
            }
            if text_to_image:
                row.update({caption: prompt, "guidance_scale": config.guidance_scale})
            rows.append(row)
        if progress is not None:
            progress(len(rows), len(jobs), float("nan"))
    text = io.StringIO()
    columns = list(METADATA_COLUMNS) + ([caption, "guidance_scale"] if text_to_image else [])
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(config.out / "metadata.csv", text.getvalue())  # last: the folder is complete once it exists
    summary: dict[str, Any] = {
        "format_version": run_folder.FORMAT_VERSION,
        "out": str(config.out),
        "run_id": manifest["run_id"],
        "images": len(rows),
        "scheduler": config.scheduler,
        "steps": config.steps,
        "seeds": [rows[0]["seed"], rows[-1]["seed"]],
        "device": str(device),
    }
    if text_to_image:
        summary["prompts"] = len(config.prompts)
        summary["guidance_scale"] = config.guidance_scale
    return summary


def caption_column_of(manifest: dict[str, Any]) -> str:
    """The column generated images carry their prompt in: the one the run read captions from."""
    return manifest.get("config", {}).get("caption_column") or "caption"


def _sample(pipe: Any, generators: list[torch.Generator], steps: int, kwargs: dict[str, Any]) -> Any:
    """The pipeline's images as floats in [0, 1], height x width x RGB."""
    if getattr(pipe, "vae", True) is not None:
        return pipe(generator=generators, num_inference_steps=steps, output_type="np", **kwargs).images
    # a pixel-space text-to-image pipeline: its "latents" are the images, in [-1, 1]
    x = pipe(generator=generators, num_inference_steps=steps, output_type="latent", **kwargs).images
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()


def _pixel_pipeline(model: Path, scheduler_name: str):
    unet, scheduler = load_model(model)
    if scheduler_name == "ddim":
        return DDIMPipeline(unet=unet, scheduler=DDIMScheduler.from_config(scheduler.config))
    return DDPMPipeline(unet=unet, scheduler=scheduler)


def _text_to_image_pipeline(manifest: dict[str, Any], model: Path, scheduler_name: str):
    """The base pipeline the run started from with the run's LoRA weights, or the run's whole pipeline."""
    from diffusers import StableDiffusionPipeline

    from royalty.attribution.model.text_to_image import load_pipeline

    source = manifest["model_source"]
    if "lora" in source:
        base = Path(source["path"])
        if sha256_tree(base) != source.get("sha256"):
            raise DataError(f"the base pipeline the run fine-tuned, {base}, changed since training: its LoRA weights no longer apply to it")
        parts = load_pipeline(base)
    else:
        parts = load_pipeline(model)
    scheduler = parts.scheduler if scheduler_name == "ddpm" else DDIMScheduler.from_config(parts.scheduler.config)
    pipe = StableDiffusionPipeline(
        vae=parts.vae, text_encoder=parts.text_encoder, tokenizer=parts.tokenizer, unet=parts.unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    if parts.vae is None:
        pipe.vae_scale_factor = 1  # pixel space: the pipeline's sizes are the images' own
    if "lora" in source:
        pipe.load_lora_weights(model)
    return pipe


def _check_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputError(f"--out {out} is not empty; choose a new folder or --force to replace its images")
        if not (out / "metadata.csv").is_file():
            raise OutputError(f"--out {out} does not hold images from `royalty generate`; --force only replaces those")
        shutil.rmtree(out)
