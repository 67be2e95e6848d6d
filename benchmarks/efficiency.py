"""Do a run's per-step values add up to what the targets' loss actually did?

    python benchmarks/efficiency.py [--out runs/efficiency] [--steps 30]

Trains sample_data runs (16 px, seed 0) on the pixel UNet and on a tiny text-to-image
pipeline (LoRA rank 4 and the whole UNet), SGD at two learning rates and the README's
AdamW recipe, and prints the markdown table BENCHMARKS.md quotes: per step, the
Σ of the values credited at that step (`steps.parquet`'s `value_sum`, mean over targets)
against the measured change of the targets' loss over that step
(`target_loss_before − target_loss_after`), ranked (Spearman) and summed; and the same
with the ledger's `unattributed` added (what moved the loss that no image is paid for:
AdamW's carried-in momentum, weight decay), where the run computed it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pandas as pd
from scipy.stats import pearsonr, spearmanr

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "sample_data"
COMMON = ["--resolution", "16", "--batch-size", "8", "--timestep-draws", "1", "--seed", "0", "--quiet", "--force"]
# (label, model, extra flags)
CASES = [
    ("pixel, SGD 0.01", "pixel", ["--optimizer", "sgd", "--lr", "0.01"]),
    ("pixel, SGD 0.001", "pixel", ["--optimizer", "sgd", "--lr", "0.001"]),
    ("text-to-image LoRA r4, SGD 0.01", "t2i", ["--optimizer", "sgd", "--lr", "0.01"]),
    ("text-to-image LoRA r4, SGD 0.001", "t2i", ["--optimizer", "sgd", "--lr", "0.001"]),
    ("text-to-image full UNet, SGD 0.01", "t2i", ["--optimizer", "sgd", "--lr", "0.01", "--lora-rank", "0"]),
    ("text-to-image full UNet, SGD 0.001", "t2i", ["--optimizer", "sgd", "--lr", "0.001", "--lora-rank", "0"]),
    ("text-to-image LoRA r4, AdamW 0.001", "t2i", ["--optimizer", "adamw", "--lr", "0.001"]),
    ("text-to-image LoRA r4, AdamW 0.001, --credit own-step", "t2i", ["--optimizer", "adamw", "--lr", "0.001", "--credit", "own-step"]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "efficiency")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    base = args.out / "tiny-sd"
    if not (base / "model_index.json").exists():
        subprocess.run([sys.executable, "-m", "royalty.attribution.model.tiny_pipeline", str(base)], check=True)
    print("| run | steps | Spearman per step | Pearson per step | Σ values / Σ measured change "
          "| Spearman, values + unattributed | (Σ values + unattributed) / Σ change |")
    print("|---|---|---|---|---|---|---|")
    for i, (label, model, flags) in enumerate(CASES):
        out = args.out / f"run-{i}"
        cmd = ["royalty", "train", str(DATA / "train"), "--targets", str(DATA / "targets"), "--out", str(out),
               "--steps", str(args.steps), *COMMON, *flags]
        if model == "t2i":
            cmd += ["--model", str(base)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        steps = pd.read_parquet(out / "steps.parquet")
        change = steps["target_loss_before"] - steps["target_loss_after"]
        rho = spearmanr(steps["value_sum"], change).statistic
        r = pearsonr(steps["value_sum"], change).statistic
        ratio = steps["value_sum"].sum() / change.sum()
        both = steps["value_sum"] + steps["unattributed"]
        ledger = "| – | – |" if both.isna().any() else f"| {spearmanr(both, change).statistic:.4f} | {both.sum() / change.sum():.3f} |"
        print(f"| {label} | {len(steps)} | {rho:.4f} | {r:.4f} | {ratio:.3f} {ledger}", flush=True)


if __name__ == "__main__":
    main()
