"""Does another autoencoder keep more of the houses' styles than the base's?

    python base/build.py --data DATA ...              # once: keeps the base's 2799 rendered images
    python benchmarks/vae_variants.py --data DATA --latent-channels 8 --steps 700 [--blocks 32,64] --out VAE
    python benchmarks/style_baselines.py --through-vae VAE

Trains only a VAE like `base/build.py`'s (blocks (32, 64): 32 px images to 16x16 latents,
or other `--blocks`;
its reconstruction loss, batch 64, AdamW lr 1e-3, one thread, seed 0) with the chosen
latent channels and steps, on the base's images, and saves it as VAE/vae/. Then
`style_baselines.py --through-vae VAE` shows what of each style survives it, and this
prints its PSNR on `sample_data/train`. A base built on a VAE that keeps the style cue
is the precondition for owner accuracy (BENCHMARKS.md, owner attribution).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import AutoencoderKL

from style_baselines import load_images, vae_round_trip

REPO = Path(__file__).resolve().parent.parent


def base_build():
    """base/build.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("base_build", REPO / "base" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["base_build"] = module
    spec.loader.exec_module(module)
    return module


def psnr(pipeline: Path, folder: Path) -> float:
    """PSNR of the images in `folder` after a round trip through the pipeline's VAE."""
    names = pd.read_csv(folder / "metadata.csv", dtype=str, keep_default_na=False)["file_name"]
    x = load_images(folder, names)
    return float(10 * np.log10(1 / ((x - vae_round_trip(pipeline, x)) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="the images `base/build.py --data` kept")
    ap.add_argument("--latent-channels", type=int, default=4)
    ap.add_argument("--steps", type=int, default=700)
    ap.add_argument("--blocks", default="32,64",
                    help="encoder/decoder block widths; each block after the first halves the latent side (32,64: 16x16; 64: 32x32)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    build = base_build()
    torch.set_num_threads(1)
    with (args.data / "metadata.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    images = build.load(args.data, rows)
    torch.manual_seed(0)
    blocks = tuple(int(b) for b in args.blocks.split(","))
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks), block_out_channels=blocks, layers_per_block=1,
        latent_channels=args.latent_channels, norm_num_groups=8, sample_size=32,
    )
    started = time.time()
    build.train_vae(vae, images, args.steps, 64, 1e-3, torch.Generator().manual_seed(0))
    vae.save_pretrained(args.out / "vae")
    side = 32 // 2 ** (len(blocks) - 1)
    print(f"blocks {args.blocks} ({side}x{side} latents), {args.latent_channels} latent channels, {args.steps} steps: {time.time() - started:.0f} s; "
          f"PSNR on sample_data/train {psnr(args.out, REPO / 'sample_data' / 'train'):.1f} dB")


if __name__ == "__main__":
    main()
