"""Can any attribution of a fine-tune of the base name a target's style owner?

    python benchmarks/owner_separability.py [--model base/emoji-base] [--lr 1e-4] [--steps 48]
                                            [--params all|attention] [--draws 24]

The ground truth behind owner accuracy, measured directly and cheaply: fine-tune the
base's UNet on ONE owner's `sample_data/train` images (AdamW, batch 16, timesteps over
the whole range), once per owner, and measure how much each fine-tune lowers each
single-style target's loss under its own prompt, in three noise bands (t < 100,
100 ≤ t < 500, t ≥ 500; the same fixed draws for every fine-tune). The owner whose
fine-tune helps a target most should be the target's true owner; this prints how often
it is, raw and minus each owner's mean gain over all targets (the contrast that
`value_specific` makes). If it is far below 90 %, the model and data limit owner
accuracy, not the values. `royalty audit` answers the same question for a run's own
recipe and draws, over every subset of owners; this script varies the recipe and the
noise band instead. Plain PyTorch on the diffusers pipeline: no royalty code.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from base_probe import REPO, BaseProbe, single_style_targets

BANDS = ((0, 100), (100, 500), (500, 1000))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=REPO / "base" / "emoji-base")
    ap.add_argument("--data", type=Path, default=REPO / "sample_data")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--params", choices=("all", "attention"), default="all")
    ap.add_argument("--draws", type=int, default=24, help="fixed draws per target and band")
    args = ap.parse_args()
    probe = BaseProbe(args.model)

    train = pd.read_csv(args.data / "train" / "metadata.csv", dtype=str, keep_default_na=False)
    targets = single_style_targets(args.data / "targets")
    lat_t, states_t = probe.latents(args.data / "targets", targets.file_name), probe.text_states(list(targets.caption))
    g = torch.Generator().manual_seed(123)
    draws = [(band, torch.randint(*band, (len(targets),), generator=g), torch.randn(lat_t.shape, generator=g)) for _ in range(args.draws) for band in BANDS]

    @torch.no_grad()
    def target_loss(unet: torch.nn.Module) -> dict[tuple[int, int], torch.Tensor]:
        out: dict[tuple[int, int], list[torch.Tensor]] = {}
        for band, t, noise in draws:
            out.setdefault(band, []).append(probe.noise_loss(unet, lat_t, states_t, t, noise))
        return {b: torch.stack(v).mean(0) for b, v in out.items()}

    before = target_loss(probe.pipe.unet)
    owners = sorted(train.owner.unique())
    gain: dict[str, dict[tuple[int, int], torch.Tensor]] = {}
    for owner in owners:
        rows = train[train.owner == owner].reset_index(drop=True)
        lat, states = probe.latents(args.data / "train", rows.file_name), probe.text_states(list(rows.caption))
        unet = copy.deepcopy(probe.pipe.unet)
        params = [p for n, p in unet.named_parameters() if args.params == "all" or "attn" in n]
        opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        gen = torch.Generator().manual_seed(0)
        for _ in range(args.steps):
            i = torch.randint(len(rows), (16,), generator=gen)
            t = torch.randint(0, probe.scheduler.config.num_train_timesteps, (16,), generator=gen)
            noise = torch.randn(lat[i].shape, generator=gen)
            loss = probe.noise_loss(unet, lat[i], states[i], t, noise).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        after = target_loss(unet)
        gain[owner] = {b: before[b] - after[b] for b in BANDS}

    truth = list(targets.owner)
    print(f"fine-tune per owner: lr {args.lr:g}, {args.steps} steps, params {args.params}; {len(truth)} single-style targets")
    print("| target draws | base loss | mean gain of the true owner's fine-tune | true owner helps most (raw) | (minus owner mean) |")
    print("|---|---|---|---|---|")
    for band in BANDS:
        table = torch.stack([gain[o][band] for o in owners], 1)
        own = np.mean([table[i, owners.index(o)].item() for i, o in enumerate(truth)])
        raw = sum(owners[k] == o for k, o in zip(table.argmax(1).tolist(), truth))
        spec = sum(owners[k] == o for k, o in zip((table - table.mean(0, keepdim=True)).argmax(1).tolist(), truth))
        print(f"| {band[0]} ≤ t < {band[1]} | {before[band].mean():.4f} | {own:+.4f} | {raw}/{len(truth)} | {spec}/{len(truth)} |")


if __name__ == "__main__":
    main()
