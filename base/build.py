#!/usr/bin/env python3
"""Rebuild `base/emoji-base/`: a small text-to-image base pretrained on emoji by other makers.

The README's main job fine-tunes this base on `sample_data/train`. It must already know
*what* a fox or a rocket is, so that the fine-tune on the owners' images teaches it their
*style*, and it must know none of the four owners' styles. So it is pretrained on emoji
by design houses that own nothing in `sample_data` (Emoji One v1 and v2, Streamline), taken
from pinned npm packages, captioned with the emoji's name only (never the house).

Steps (all seeded, all on the CPU):

1. `npm pack` the pinned packages (or read them from `--source DIR`), check their sha512,
   rasterize every icon (flags, keycaps, letters and skin-tone variants left out) at 256 px
   with resvg, composite on white, downscale to 32 px with Lanczos, as `sample_data` does.
2. Train the UNet and the CLIP text encoder together on the 32 px images and captions
   (epsilon prediction, Stable Diffusion's noise schedule; 10 % of captions dropped so
   that classifier-free guidance works). With `--space latent`, first train a VAE
   (32 px images to 16x16x4 latents) and denoise its latents instead: measured, that VAE
   erases the outlines and shading that tell the owners' houses apart (BENCHMARKS.md,
   owner attribution), so the shipped base denoises pixels.
3. Save a Stable Diffusion layout pipeline folder (safetensors; no `vae/` in pixel space)
   that `royalty train --model` and `royalty generate` load.

Usage::

    python base/build.py                       # writes base/emoji-base/
    python base/build.py --out DIR --source DIR --unet-steps N [--space latent --vae-steps N]

Requirements: royalty installed, `resvg-py==0.5.0`, and `npm` unless `--source` is given.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from royalty.npm_images import fetch_pinned, render_rgba, save_png, to_thumbnail

SIZE = 32
HERE = Path(__file__).resolve().parent
# The UNet of each space, at about the same cost per step on a CPU (1.4-1.8 s at batch 64):
# in latent space two levels on 16x16x4; in pixel space three on 32x32x3, the full-resolution
# level without attention (self-attention over 1024 positions is what would cost there).
SPACES: dict[str, dict] = {
    "latent": {"unet_channels": (64, 128), "vae_channels": (32, 64)},
    "pixel": {"unet_channels": (32, 64, 128), "cross_attention_levels": (False, True, True), "vae_channels": ()},
}


@dataclass(frozen=True)
class IconSet:
    """One pinned Iconify JSON package: one design house's emoji set."""

    house: str
    npm_name: str
    version: str
    integrity: str  # npm `dist.integrity`
    tarball: str
    license: str  # SPDX
    notice: str  # the attribution the license asks for


ICON_SETS: tuple[IconSet, ...] = (
    IconSet(
        house="emojione",
        npm_name="@iconify-json/emojione",
        version="1.2.3",
        integrity="sha512-T9+T3HIbJNLKKsmxYKlaYhvnHYkz/HNYTV7SHCXVZPfeUi4FqskY70YeN8yYAZT8cCv7w5vJxS4Q1m8zb9CMMg==",
        tarball="iconify-json-emojione-1.2.3.tgz",
        license="CC-BY-4.0",
        notice="Emoji One (v2, colored) by Emoji One (github.com/EmojiTwo/emojitwo), CC BY 4.0, via npm @iconify-json/emojione 1.2.3",
    ),
    IconSet(
        house="emojione-v1",
        npm_name="@iconify-json/emojione-v1",
        version="1.2.3",
        integrity="sha512-UjI2VQEXVtGlPBvQuxEizro7QCgBcJDOYwKUupquvvZ8UV4xOlvm45IU82JYWegiAWLerY79gFLMZ26U6Ms+ww==",
        tarball="iconify-json-emojione-v1-1.2.3.tgz",
        license="CC-BY-SA-4.0",
        notice="Emoji One (v1) by Emoji One (github.com/joypixels/emojione-legacy), CC BY-SA 4.0, via npm @iconify-json/emojione-v1 1.2.3",
    ),
    IconSet(
        house="streamline",
        npm_name="@iconify-json/streamline-emojis",
        version="1.2.4",
        integrity="sha512-iNr9T9XuZVTyQPJO8ZlLxBzPkpi7qMl+z1l0C31vpEMqhPMelth3n7CeWQYtixdetDPdI81yeG4ROqjWpYJE6A==",
        tarball="iconify-json-streamline-emojis-1.2.4.tgz",
        license="CC-BY-4.0",
        notice="Streamline Emojis by Streamline (github.com/webalys-hq/streamline-vectors), CC BY 4.0, via npm @iconify-json/streamline-emojis 1.2.4",
    ),
)

# Left out: text and flags say little at 32 px; skin tones would repeat a drawing five times.
_SKIP = re.compile(r"skin-tone|^flag|keycap|regional-indicator|-button$|^letter-|^input-")
# Iconify names that are older or longer names of a concept `sample_data` captions otherwise:
# the base must know the owners' concepts by the owners' captions.
_SAME_CONCEPT = {
    "pouting face": "enraged face",
    "frog face": "frog",
    "bear face": "bear",
    "panda face": "panda",
    "lion face": "lion",
    "fox face": "fox",
    "smiling face with heart eyes": "smiling face with heart-eyes",
}


def caption_of(icon_name: str) -> str:
    """The emoji's name as a caption: hyphens to spaces, a variant number dropped."""
    words = re.sub(r"-\d+$", "", icon_name).replace("-", " ")
    return _SAME_CONCEPT.get(words, words)


def fetch(source: Path | None, workdir: Path) -> dict[str, Path]:
    """The pinned tarballs, from `source` or `npm pack`, each checked against its sha512."""
    return {s.house: fetch_pinned(s.npm_name, s.version, s.tarball, s.integrity, source, workdir) for s in ICON_SETS}


def icons(tarball: Path) -> dict[str, str]:
    """Icon name -> standalone SVG text, from an Iconify JSON package."""
    with tarfile.open(tarball) as tar:
        member = tar.extractfile("package/icons.json")
        assert member is not None
        doc = json.load(member)
    out = {}
    for name, icon in doc["icons"].items():
        if _SKIP.search(name):
            continue
        left, top = icon.get("left", doc.get("left", 0)), icon.get("top", doc.get("top", 0))
        width, height = icon.get("width", doc.get("width", 16)), icon.get("height", doc.get("height", 16))
        out[name] = (
            f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'viewBox="{left} {top} {width} {height}">{icon["body"]}</svg>'
        )
    return out


def build_images(tarballs: dict[str, Path], out: Path) -> list[dict[str, str]]:
    """Write every kept icon as a 32 px PNG under `out/<house>/`; return the metadata rows."""
    rows = []
    for s in ICON_SETS:
        for name, svg in sorted(icons(tarballs[s.house]).items()):
            save_png(to_thumbnail(render_rgba(svg.encode("utf-8"), "svg"), SIZE), out / s.house / f"{name}.png")
            rows.append({"file_name": f"{s.house}/{name}.png", "house": s.house, "caption": caption_of(name), "license": s.license})
    with (out / "metadata.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["file_name", "house", "caption", "license"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return rows


def load(folder: Path, rows: list[dict[str, str]]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(folder / r["file_name"]).convert("RGB"), dtype=np.float32) for r in rows]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_vae(vae: torch.nn.Module, images: torch.Tensor, steps: int, batch: int, lr: float, g: torch.Generator) -> None:
    """Reconstruction with a small KL term: latents that decode back to the emoji."""
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    vae.train()
    for step in range(steps):
        x = images[torch.randint(len(images), (batch,), generator=g)]
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g)
        recon = vae.decode(z).sample
        kl = dist.kl().mean() / x[0].numel()
        loss = torch.nn.functional.mse_loss(recon, x) + 1e-4 * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"vae step {step}/{steps} loss {loss.item():.4f}")
    vae.eval()


def train_unet(pipe, latents: torch.Tensor, captions: list[str], steps: int, batch: int, lr: float, g: torch.Generator) -> None:
    """The UNet and the text encoder together, on Stable Diffusion's objective."""
    unet, text, tok, sched = pipe.unet, pipe.text_encoder, pipe.tokenizer, pipe.scheduler
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids
    empty = tok([""], padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)
    warm = min(200, steps // 10)
    lr_at = lambda s: lr * min(1.0, (s + 1) / max(warm, 1)) * 0.5 * (1 + np.cos(np.pi * s / steps))  # noqa: E731
    unet.train()
    text.train()
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        idx = torch.randint(len(latents), (batch,), generator=g)
        x = latents[idx]
        batch_ids = ids[idx].clone()
        drop = torch.rand(batch, generator=g) < 0.1
        batch_ids[drop] = empty
        noise = torch.randn(x.shape, generator=g)
        t = torch.randint(sched.config.num_train_timesteps, (batch,), generator=g)
        noisy = sched.add_noise(x, noise, t)
        pred = unet(noisy, t, encoder_hidden_states=text(batch_ids)[0]).sample
        loss = torch.nn.functional.mse_loss(pred, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if step % 200 == 0 or step == steps - 1:
            log(f"unet step {step}/{steps} loss {loss.item():.4f}")
    unet.eval()
    text.eval()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=HERE / "emoji-base")
    ap.add_argument("--source", type=Path, default=None, help="folder holding the pinned .tgz files (else npm pack)")
    ap.add_argument("--data", type=Path, default=None, help="keep the rasterized training images here")
    ap.add_argument("--space", choices=("latent", "pixel"), default="pixel", help="denoise VAE latents, or RGB pixels (no VAE)")
    ap.add_argument("--vae-steps", type=int, default=700)
    ap.add_argument("--unet-steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args(argv)

    from diffusers import StableDiffusionPipeline

    from royalty.attribution.model.tiny_pipeline import TinyPipelineConfig, build_tiny_pipeline
    from royalty.quiet import quiet_model_libraries

    quiet_model_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data or work / "data"
        rows = build_images(fetch(args.source, work), data)
        log(f"{len(rows)} images from {len(ICON_SETS)} sets in {data}")
        images = load(data, rows)
        captions = [r["caption"] for r in rows]
        # every caption word, and the owners' and targets' captions, become whole tokens
        words = {w for c in captions for w in c.split()}
        for meta in (HERE.parent / "sample_data/train/metadata.csv", HERE.parent / "sample_data/targets/metadata.csv"):
            with meta.open(encoding="utf-8") as f:
                words |= {w for r in csv.DictReader(f) for w in r["caption"].split()}
        config = TinyPipelineConfig(**SPACES[args.space], cross_attention_dim=64, text_hidden=64, text_layers=2, max_length=12,
            sample_size=SIZE, words=tuple(sorted(w.lower() for w in words)), seed=args.seed)  # fmt: skip
        build_tiny_pipeline(work / "pipe", config)
        pixel = args.space == "pixel"
        extra = {"vae": None} if pixel else {}
        pipe = StableDiffusionPipeline.from_pretrained(work / "pipe", local_files_only=True, safety_checker=None, **extra)
        g = torch.Generator().manual_seed(args.seed)
        if pixel:
            train_unet(pipe, images, captions, args.unet_steps, args.batch_size, 1e-3, g)
        else:
            train_vae(pipe.vae, images, args.vae_steps, args.batch_size, 1e-3, g)
            with torch.no_grad():
                latents = torch.cat([pipe.vae.encode(images[i : i + 256]).latent_dist.mean for i in range(0, len(images), 256)])
            scale = float(1.0 / latents.std())
            pipe.vae.register_to_config(scaling_factor=scale)
            log(f"latent scaling factor {scale:.4f}")
            train_unet(pipe, latents * scale, captions, args.unet_steps, args.batch_size, 1e-3, g)
        if args.out.exists():
            shutil.rmtree(args.out)
        pipe.save_pretrained(args.out, safe_serialization=True)
    log(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
