"""How separable are sample_data's styles without any model? (context for the train issue's 90 % goal)

    python benchmarks/style_baselines.py [--data sample_data] [--through-vae base/emoji-base]

Predicts each single-style target's owner with a nearest-owner-centroid rule on simple,
unlearned image features, and prints the share of targets it gets right. Summed in-run
values pick the owner the same way: Σ over an owner's images of ⟨g_target, g_image⟩ is
the target's inner product with the owner's gradient centroid, so a centroid rule on
raw pixels or edges says how much of the goal plain image statistics already reach.

`--through-vae PIPELINE`: first round-trip every image through that Stable Diffusion
pipeline's VAE (encode to the latent mean, decode): what of each style survives the
autoencoder a latent text-to-image model sees the images through.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def load_images(folder: Path, names: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / n).convert("RGB"), dtype=np.float64) / 255 for n in names])


def _edges(a: np.ndarray) -> np.ndarray:
    """Per-pixel gradient magnitude, summed over the colour channels."""
    gx = np.diff(a, axis=2)[:, :-1]
    gy = np.diff(a, axis=1)[:, :, :-1]
    return np.sqrt(gx**2 + gy**2).sum(-1)


FEATURES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pixels": lambda a: a.reshape(len(a), -1),
    "edge map": lambda a: _edges(a).reshape(len(a), -1),
    "edge-strength histogram": lambda a: np.stack([np.histogram(e, bins=20, range=(0, 3))[0] for e in _edges(a)]).astype(float),
    "colour histogram (64 bins)": lambda a: np.stack(
        [np.bincount(i.ravel(), minlength=64) for i in (a * 3.999).astype(int) @ np.array([16, 4, 1])]
    ).astype(float),
}
RULES: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    # the rule summed values follow: centred inner product with each owner's centroid
    "inner product": lambda g, c, mu: (g - g.mean(0)) @ (c - mu).T,
    "distance": lambda g, c, mu: -((g[:, None] - c[None]) ** 2).sum(-1),
}


def vae_round_trip(pipeline: Path, images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] after the pipeline's VAE (latent mean, decoded, rounded to 8 bits)."""
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(pipeline / "vae")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() * 2 - 1
    with torch.no_grad():
        out = vae.decode(vae.encode(x).latent_dist.mean).sample
    return ((out.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).double().numpy() / 255


def predict_owners(x: np.ndarray, train_owners: np.ndarray, y: np.ndarray, feature: str, rule: str) -> np.ndarray:
    """Each target image's predicted owner: the best-scoring owner centroid of the training images' features."""
    owners = np.array(sorted(set(train_owners)))
    f, g = FEATURES[feature](x), FEATURES[feature](y)
    centroids = np.stack([f[train_owners == o].mean(0) for o in owners])
    return owners[RULES[rule](g, centroids, f.mean(0)).argmax(1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("sample_data"))
    ap.add_argument("--through-vae", type=Path, default=None, metavar="PIPELINE")
    args = ap.parse_args()
    train = pd.read_csv(args.data / "train" / "metadata.csv", dtype=str, keep_default_na=False)
    targets = pd.read_csv(args.data / "targets" / "metadata.csv", dtype=str, keep_default_na=False)
    targets = targets[targets["owner"] != ""]
    x = load_images(args.data / "train", train["file_name"])
    y = load_images(args.data / "targets", targets["file_name"])
    if args.through_vae is not None:
        x, y = vae_round_trip(args.through_vae, x), vae_round_trip(args.through_vae, y)
    owners = sorted(train["owner"].unique())
    truth = targets["owner"].to_numpy()
    print(f"{len(truth)} single-style targets, {len(owners)} owners (chance {100 / len(owners):.0f} %)")
    print("| features | " + " | ".join(RULES) + " |")
    print("|---|" + "---|" * len(RULES))
    for name in FEATURES:
        cells = []
        for rule in RULES:
            hits = int((predict_owners(x, train["owner"].to_numpy(), y, name, rule) == truth).sum())
            cells.append(f"{hits}/{len(truth)} ({100 * hits / len(truth):.0f} %)")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
