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

import torch

from base_probe import REPO, BaseProbe, single_style_targets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "base" / "emoji-base")
    ap.add_argument("--targets", type=Path, default=REPO / "sample_data" / "targets")
    ap.add_argument("--draws", type=int, default=16)
    args = ap.parse_args()
    probe = BaseProbe(args.model)
    meta = single_style_targets(args.targets)
    prompts = sorted(set(meta.caption)) + [""]
    n = len(meta)
    lat = probe.latents(args.targets, meta.file_name)
    states = probe.text_states(prompts)
    g = torch.Generator().manual_seed(0)
    loss = torch.zeros(n, len(prompts))
    with torch.no_grad():
        for _ in range(args.draws):
            t = torch.randint(100, 900, (n,), generator=g)
            noise = torch.randn(lat.shape, generator=g)
            for j in range(len(prompts)):
                loss[:, j] += probe.noise_loss(probe.pipe.unet, lat, states[j : j + 1].expand(n, -1, -1), t, noise) / args.draws
    true = torch.tensor([prompts.index(c) for c in meta.caption])
    right = int((loss[:, :-1].argmin(1) == true).sum())
    own = loss[torch.arange(n), true]
    wrong = (loss[:, :-1].sum(1) - own) / (len(prompts) - 2)
    print(f"lowest loss under the target's own prompt: {right}/{n} (chance {n // (len(prompts) - 1)}/{n})")
    print(f"mean loss: own prompt {own.mean():.4f}, a wrong prompt {wrong.mean():.4f}, empty prompt {loss[:, -1].mean():.4f}")


if __name__ == "__main__":
    main()
