"""Does a text-to-image base use its prompts? A diffusion classifier on held-out images.

    python benchmarks/base_captions.py [--model base/emoji-base] [--draws 16]

For each single-style target of `sample_data/targets` (five concepts no training image
shows, each drawn by four houses the base never saw), the base's denoising loss under
each of the five concept prompts and under the empty prompt, averaged over the same
fixed (timestep in [100, 900), noise) draws. A base that knows what the concepts look
like has its lowest loss under the target's own prompt: this prints how often (chance
1 in 5) and the mean loss under the true, a wrong, and the empty prompt.
Plain PyTorch on the diffusers pipeline: no royalty code.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image

HERE = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=HERE / "base" / "emoji-base")
    ap.add_argument("--targets", type=Path, default=HERE / "sample_data" / "targets")
    ap.add_argument("--draws", type=int, default=16)
    args = ap.parse_args()
    pipe = StableDiffusionPipeline.from_pretrained(args.model, safety_checker=None, requires_safety_checker=False)
    meta = pd.read_csv(args.targets / "metadata.csv", dtype=str, keep_default_na=False)
    meta = meta[meta.owner != ""].reset_index(drop=True)
    x = torch.stack([torch.from_numpy(np.asarray(Image.open(args.targets / f).convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1) for f in meta.file_name])
    prompts = sorted(set(meta.caption)) + [""]
    n = len(meta)
    with torch.no_grad():
        lat = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        ids = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
        states = pipe.text_encoder(ids)[0]
        g = torch.Generator().manual_seed(0)
        loss = torch.zeros(n, len(prompts))
        for _ in range(args.draws):
            t = torch.randint(100, 900, (n,), generator=g)
            noise = torch.randn(lat.shape, generator=g)
            noisy = pipe.scheduler.add_noise(lat, noise, t)
            for j in range(len(prompts)):
                pred = pipe.unet(noisy, t, encoder_hidden_states=states[j : j + 1].expand(n, -1, -1)).sample
                loss[:, j] += ((pred - noise) ** 2).mean(dim=(1, 2, 3)) / args.draws
    true = torch.tensor([prompts.index(c) for c in meta.caption])
    right = int((loss[:, :-1].argmin(1) == true).sum())
    own = loss[torch.arange(n), true]
    wrong = (loss[:, :-1].sum(1) - own) / (len(prompts) - 2)
    print(f"lowest loss under the target's own prompt: {right}/{n} (chance {n // (len(prompts) - 1)}/{n})")
    print(f"mean loss: own prompt {own.mean():.4f}, a wrong prompt {wrong.mean():.4f}, empty prompt {loss[:, -1].mean():.4f}")


if __name__ == "__main__":
    main()
