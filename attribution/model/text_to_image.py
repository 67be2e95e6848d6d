"""Text-to-image latent diffusion: the task of a Stable-Diffusion-style fine-tune.

The model folder is a local diffusers pipeline in the Stable Diffusion layout
(`model_index.json`; unet: UNet2DConditionModel, vae: AutoencoderKL, text_encoder:
CLIPTextModel, tokenizer: CLIPTokenizer, scheduler). A folder whose index lists the VAE as
absent (`"vae": [null, null]`, as diffusers writes a pipeline saved without one) is a
pixel-space pipeline: its UNet denoises the RGB images themselves (in [-1, 1]). The VAE and
the text encoder stay frozen, so each image's latent and each caption's encoder states are
computed once (`inputs`); the UNet, or the LoRA adapters on it, is what trains and is valued. The
objective is diffusers' text-to-image one: the scheduler's `prediction_type` decides
whether the UNet predicts the noise (epsilon) or the velocity (v_prediction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

from royalty.attribution.data.folders import ImageTable
from royalty.attribution.model.task import Inputs, Rows
from royalty.attribution.training.draws import generator
from royalty.errors import DataError, InputMissingError, UsageError

PREDICTION_TYPES = ("epsilon", "v_prediction")
# diffusers' imagefolder convention first, then the column sample_data uses
CAPTION_COLUMNS = ("text", "caption")
_LOCAL: dict[str, Any] = {"local_files_only": True, "low_cpu_mem_usage": False}


def is_text_to_image(path: Path) -> bool:
    """Whether `path` is a diffusers pipeline folder whose UNet is conditioned on text."""
    index = Path(path) / "model_index.json"
    if not index.is_file():
        return False
    try:
        doc = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{index} is not valid JSON: {exc}") from exc
    unet = doc.get("unet")
    return isinstance(unet, list) and len(unet) == 2 and unet[1] == "UNet2DConditionModel"


@dataclass(frozen=True)
class Pipeline:
    """The parts of a text-to-image pipeline folder a fine-tune uses."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL | None  # None: pixel space
    text_encoder: torch.nn.Module
    tokenizer: Any
    scheduler: DDPMScheduler


def load_pipeline(path: Path) -> Pipeline:
    """A local Stable Diffusion layout folder, or a clear refusal of what it lacks."""
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    if not path.is_dir():
        raise InputMissingError(f"model folder {path} does not exist")
    doc = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    if "text_encoder_2" in doc or "tokenizer_2" in doc:
        raise DataError(
            f"{path} is an SDXL-layout pipeline (a second text encoder and added time ids): royalty fine-tunes "
            "the Stable Diffusion 1.x/2.x layout (one CLIP text encoder); SDXL is not supported yet"
        )
    pixel = doc.get("vae", ()) in ([None, None], None)
    parts = ("unet", "text_encoder", "tokenizer", "scheduler") + (() if pixel else ("vae",))
    missing = [part for part in parts if not (path / part).is_dir()]
    if missing:
        raise DataError(
            f"{path} is a text-to-image pipeline without {', '.join(missing)}/: royalty needs the UNet, text encoder, "
            "tokenizer and scheduler, and the VAE unless model_index.json lists it as absent (pixel space)"
        )
    if pixel:
        unet_config = UNet2DConditionModel.load_config(path, subfolder="unet", local_files_only=True)
        if unet_config.get("in_channels") != 3 or unet_config.get("out_channels") != 3:
            raise DataError(
                f"{path} has no VAE, so its UNet must denoise RGB pixels (3 channels in and out); it has "
                f"{unet_config.get('in_channels')} in, {unet_config.get('out_channels')} out"
            )
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **_LOCAL)
        vae = None if pixel else AutoencoderKL.from_pretrained(path, subfolder="vae", **_LOCAL)
        text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
        # training draws noise as DDPM does, whatever sampler the folder ships for inference
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:  # RuntimeError: weights that do not fit their config
        raise DataError(f"cannot load the text-to-image pipeline in {path}: {exc}") from exc
    if unet.config.get("addition_embed_type") is not None:
        raise DataError(f"{path}: the UNet expects added conditioning ({unet.config['addition_embed_type']}); royalty conditions on text only")
    if scheduler.config.prediction_type not in PREDICTION_TYPES:
        raise DataError(
            f"{path}: the scheduler predicts {scheduler.config.prediction_type!r}; royalty trains "
            f"{' or '.join(PREDICTION_TYPES)}"
        )
    return Pipeline(unet, vae, text_encoder, tokenizer, scheduler)


def caption_column(table: ImageTable, requested: str | None) -> str:
    """The metadata column holding captions: `requested`, else `text`, else `caption`."""
    names = list(table.extra.columns)
    if requested is not None:
        if requested not in names:
            raise DataError(f"{table.root}: its metadata has no caption column {requested!r} (columns: {', '.join(names) or 'none'})")
        return requested
    for name in CAPTION_COLUMNS:
        if name in names:
            return name
    raise DataError(
        f"{table.root}: a text-to-image fine-tune needs a caption per image, and its metadata has no "
        f"{' or '.join(CAPTION_COLUMNS)} column; add one, or name yours with --caption-column"
    )


def captions_of(table: ImageTable, requested: str | None, allow_empty: bool) -> list[str]:
    """One caption per image, in the table's order; a missing or empty one is refused by row."""
    column = caption_column(table, requested)
    captions = []
    for i, raw in enumerate(table.extra[column].tolist()):
        text = "" if raw is None or (isinstance(raw, float) and pd.isna(raw)) else str(raw).strip()
        if not text and not allow_empty:
            raise DataError(
                f"{table.root}: image {table.file_names[i]!r} has an empty {column!r}; caption every image, "
                "or pass --allow-empty-captions to train those unconditioned"
            )
        captions.append(text)
    return captions


@dataclass(frozen=True)
class TextToImage:
    """The `Task` of a text-to-image fine-tune: denoise VAE latents (or pixels) given caption states."""

    model: UNet2DConditionModel
    pipeline: Pipeline
    seed: int  # the VAE's latent draws derive from it, per image
    caption_column: str | None = None  # None: `text`, else `caption`
    allow_empty_captions: bool = False

    @property
    def scheduler(self) -> DDPMScheduler:
        return self.pipeline.scheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.config.num_train_timesteps)

    @property
    def vae_scale_factor(self) -> int:
        vae = self.pipeline.vae
        return 1 if vae is None else 2 ** (len(vae.config.block_out_channels) - 1)

    @torch.no_grad()
    def inputs(self, table: ImageTable) -> Inputs:
        weight = next(self.model.parameters())
        captions = captions_of(table, self.caption_column, self.allow_empty_captions)
        latents = self._latents(table, weight.device).to(weight.dtype)
        return Inputs(latents, self.encode_prompts(captions, weight.device).to(weight.dtype))

    def _latents(self, table: ImageTable, device: torch.device) -> torch.Tensor:
        vae = self.pipeline.vae
        if vae is None:  # pixel space: the image is what is noised and denoised
            return table.images.to(device)
        rows = []
        for i in range(len(table)):
            dist = vae.encode(table.images[i : i + 1].to(device, vae.dtype)).latent_dist
            # one draw per image, from its content and the seed: the same image gets the
            # same latent in the training set, as a target and in a replay
            g = generator(self.seed, f"vae-latent:{table.sha256[i]}")
            eps = torch.randn(dist.mean.shape, generator=g).to(device, dist.mean.dtype)
            rows.append((dist.mean + dist.std * eps) * vae.config.scaling_factor)
        return torch.cat(rows)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str], device: torch.device) -> torch.Tensor:
        tok = self.pipeline.tokenizer
        ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
        return self.pipeline.text_encoder(ids.to(device))[0]

    def losses(self, rows: Rows) -> torch.Tensor:
        x, t, noise = rows.inputs.x, rows.timesteps, rows.noise
        noisy = self.scheduler.add_noise(x, noise, t)
        pred = self.model(noisy, t, encoder_hidden_states=rows.inputs.cond).sample
        target = noise if self.scheduler.config.prediction_type == "epsilon" else self.scheduler.get_velocity(x, noise, t)
        return ((pred - target) ** 2).mean(dim=tuple(range(1, pred.dim())))

    def save(self, folder: Path) -> None:
        from diffusers import StableDiffusionPipeline  # imports transformers: only when needed

        if _has_lora(self.model):
            save_lora(self.model, folder)
            return
        p = self.pipeline
        StableDiffusionPipeline(
            vae=p.vae, text_encoder=p.text_encoder, tokenizer=p.tokenizer, unet=self.model, scheduler=p.scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        ).save_pretrained(folder, safe_serialization=True)


def check_latent_resolution(task: TextToImage, resolution: int) -> None:
    """The image must map to latents the UNet can halve once per down block but the last."""
    factor = task.vae_scale_factor * 2 ** (len(task.model.config.block_out_channels) - 1)
    if resolution <= 0 or resolution % factor:
        raise UsageError(
            f"resolution {resolution} is not supported by this pipeline: it must be a positive multiple of {factor} "
            f"(VAE scale {task.vae_scale_factor} × the UNet's downsampling)"
        )


@dataclass(frozen=True)
class Lora:
    """LoRA adapters on the UNet (peft), as diffusers' text-to-image LoRA script adds them."""

    rank: int
    alpha: float
    targets: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"rank": self.rank, "alpha": self.alpha, "targets": list(self.targets)}


def add_lora(unet: torch.nn.Module, lora: Lora, seed: int) -> None:
    """Freeze the UNet and add trainable adapters (lora_B = 0: the model starts unchanged)."""
    from peft import LoraConfig

    names = [n for n, _ in unet.named_modules()]
    unmatched = [t for t in lora.targets if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:
        raise UsageError(f"--lora-targets {', '.join(unmatched)}: no module of the UNet has that name")
    unet.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # lora_A's initialisation is part of the run
        unet.add_adapter(LoraConfig(r=lora.rank, lora_alpha=lora.alpha, init_lora_weights="gaussian", target_modules=list(lora.targets)))


def _has_lora(unet: torch.nn.Module) -> bool:
    return any("lora_" in n for n, _ in unet.named_parameters())


def save_lora(unet: torch.nn.Module, folder: Path, adapter_name: str = "default") -> None:
    """The adapters in diffusers' format: `pipe.load_lora_weights(folder)` applies them.

    peft's names become diffusers' (`unet.` prefix, lora.down/lora.up); the adapter's
    config (rank, alpha, targets) rides in the file's metadata, without which
    `load_lora_weights` would scale an adapter whose alpha is not its rank wrongly.
    """
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet, adapter_name=adapter_name))
    config = unet.peft_config[adapter_name].to_dict()  # type: ignore[union-attr]
    # a set (target_modules) is written in hash order: sort it so the file is reproducible
    config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
    StableDiffusionPipeline.save_lora_weights(
        Path(folder), unet_lora_layers=layers, unet_lora_adapter_metadata=config, safe_serialization=True
    )
    canonical_safetensors(Path(folder) / LORA_WEIGHTS)


LORA_WEIGHTS = "pytorch_lora_weights.safetensors"


def canonical_safetensors(path: Path) -> None:
    """Rewrite a safetensors header with its keys sorted: the same tensors, the same bytes.

    safetensors writes the metadata's keys in hash order, so two saves of the same
    adapters differ byte for byte, and with them the run folder's recorded hash. The
    format is an 8-byte little-endian header length, a JSON header (space-padded to a
    multiple of 8) and the tensor data, whose offsets count from the data's start and so
    do not move.
    """
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + size :])
