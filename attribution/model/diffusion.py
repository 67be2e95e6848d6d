"""The pixel diffusion model: the default tiny UNet, loading a local model, its loss and its task.

Nothing here downloads: the default model is built from a config in code, and
`load_unet` reads a local diffusers folder (a UNet2DModel or a DDPMPipeline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

from royalty.attribution.data.folders import ImageTable
from royalty.attribution.model.task import Inputs, Rows
from royalty.errors import DataError, InputMissingError, UsageError


@dataclass(frozen=True)
class TinyUNetConfig:
    """The default model: a small UNet2DModel that trains in minutes on a CPU."""

    block_out_channels: tuple[int, ...] = (32, 64)
    layers_per_block: int = 1
    attention: bool = True  # one attention block at the lowest resolution
    norm_num_groups: int = 8
    attention_head_dim: int = 8


def build_default_unet(resolution: int, config: TinyUNetConfig = TinyUNetConfig(), seed: int = 0) -> UNet2DModel:
    n = len(config.block_out_channels)
    down = ["DownBlock2D"] * n
    up = ["UpBlock2D"] * n
    if config.attention:
        down[-1] = "AttnDownBlock2D"
        up[0] = "AttnUpBlock2D"
    factor = 2 ** (n - 1)
    if resolution % factor:
        raise UsageError(f"resolution {resolution} is not supported by the default model: it must be a multiple of {factor}")
    # Initialisation is part of the run: seed it so the same --seed gives the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=resolution,
            in_channels=3,
            out_channels=3,
            layers_per_block=config.layers_per_block,
            block_out_channels=config.block_out_channels,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            norm_num_groups=config.norm_num_groups,
            attention_head_dim=config.attention_head_dim,
        )


def default_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")


# never the hub; and without `accelerate` (not a dependency) diffusers warns unless told
# plainly to load the ordinary way
_LOCAL = {"local_files_only": True, "low_cpu_mem_usage": False}


def load_model(path: Path) -> tuple[UNet2DModel, DDPMScheduler]:
    """A local diffusers folder: a DDPMPipeline (unet/ + scheduler/) or a bare UNet2DModel."""
    path = Path(path)
    if not path.exists():
        raise InputMissingError(f"model folder {path} does not exist")
    try:
        if (path / "model_index.json").is_file():
            unet = UNet2DModel.from_pretrained(path, subfolder="unet", **_LOCAL)
            sched_dir = path / "scheduler"
            scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True) if sched_dir.is_dir() else default_scheduler()
        elif (path / "config.json").is_file():
            cls = json.loads((path / "config.json").read_text()).get("_class_name")
            if cls not in (None, "UNet2DModel"):
                raise DataError(f"{path}/config.json describes a {cls}; royalty fine-tunes a UNet2DModel")
            unet = UNet2DModel.from_pretrained(path, **_LOCAL)
            scheduler = default_scheduler()
        else:
            raise DataError(f"{path} is not a diffusers folder (no model_index.json or config.json)")
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot load the model in {path}: {exc}") from exc
    return unet, scheduler


def check_resolution(unet: UNet2DModel, resolution: int) -> None:
    """The UNet halves the image once per down block but the last: refuse what it cannot."""
    factor = 2 ** (len(unet.config.block_out_channels) - 1)
    if resolution <= 0 or resolution % factor:
        raise UsageError(f"resolution {resolution} is not supported by this model: it must be a positive multiple of {factor}")


def noise_prediction_losses(
    unet: UNet2DModel, scheduler: DDPMScheduler, x0: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor
) -> torch.Tensor:
    """One loss per row: mean squared error of the predicted noise (the DDPM objective)."""
    noisy = scheduler.add_noise(x0, noise, timesteps)
    pred = unet(noisy, timesteps).sample
    return ((pred - noise) ** 2).mean(dim=tuple(range(1, pred.dim())))


@dataclass(frozen=True)
class PixelDiffusion:
    """The `Task` of an unconditional pixel-space DDPM: predict the noise added to an image."""

    model: UNet2DModel
    scheduler: DDPMScheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    def inputs(self, table: ImageTable) -> Inputs:
        # the UNet sees pixels, unconditioned
        return Inputs(table.images.to(next(self.model.parameters()).device))

    def losses(self, rows: Rows) -> torch.Tensor:
        return noise_prediction_losses(self.model, self.scheduler, rows.inputs.x, rows.timesteps, rows.noise)

    def save(self, folder: Path) -> None:
        DDPMPipeline(unet=self.model, scheduler=self.scheduler).save_pretrained(folder, safe_serialization=True)
