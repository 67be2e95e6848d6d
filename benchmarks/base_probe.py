"""What benchmarks/base_captions.py and owner_separability.py share: a Stable Diffusion
pipeline folder (latent or pixel space) opened with diffusers, and `sample_data` images as its latents and captions
as its text-encoder states (plain diffusers calls, no royalty code)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


class BaseProbe:
    """A pipeline folder, and the latents and text states it gives `sample_data`'s images."""

    def __init__(self, folder: Path) -> None:
        pixel = json.loads((Path(folder) / "model_index.json").read_text()).get("vae") == [None, None]
        extra = {"vae": None} if pixel else {}  # a pixel-space pipeline: the UNet denoises the images
        self.pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False, **extra)
        self.scheduler = self.pipe.scheduler

    @torch.no_grad()
    def latents(self, folder: Path, names: pd.Series) -> torch.Tensor:
        """The VAE latents' means (times the scaling factor) of the images, in [-1, 1] RGB first
        (in pixel space: the images)."""
        x = torch.stack([torch.from_numpy(np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1) for n in names])
        if self.pipe.vae is None:
            return x
        return self.pipe.vae.encode(x).latent_dist.mean * self.pipe.vae.config.scaling_factor

    @torch.no_grad()
    def text_states(self, captions: list[str]) -> torch.Tensor:
        tok = self.pipe.tokenizer
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.pipe.text_encoder(ids)[0]

    def noise_loss(self, unet: torch.nn.Module, lat: torch.Tensor, states: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Per-row epsilon-prediction loss (the base's objective)."""
        pred = unet(self.scheduler.add_noise(lat, noise, t), t, encoder_hidden_states=states).sample
        return ((pred - noise) ** 2).mean(dim=(1, 2, 3))


def single_style_targets(targets: Path) -> pd.DataFrame:
    meta = pd.read_csv(targets / "metadata.csv", dtype=str, keep_default_na=False)
    return meta[meta.owner != ""].reset_index(drop=True)
