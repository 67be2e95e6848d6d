"""A job's ledger: do the values and the unattributed terms account for the change of the
targets' loss, step by step? (docs/design.md §1.6)

    python benchmarks/ledger.py [--job from-scratch|main] [--out runs/ledger] [--seeds 0,1,2]
                                [--orders 1,2,secant] [--credits applied,own-step]

`--job from-scratch` (the default) trains the from-scratch job of the README ("Training
without a base": 100 AdamW warm-up steps at 1e-3, 50 valued AdamW steps at 2e-4, two
target draws at t < 100, 32 px); `--job main` the README's main job (the LoRA fine-tune
of base/emoji-base with the command's defaults). Once per seed, order and credit
(`--orders`: 1, 2 with Hessian-vector products, `secant`: 2 by the secant), reusing a
finished run with the same recipe, and prints the markdown table BENCHMARKS.md quotes:
Σ over the valued steps of each ledger column, |Σ residual| / |Σ measured change|, and
the per-step Spearman of value_sum + unattributed (own-step: value_sum alone) against
the measured change.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
JOBS = {
    "from-scratch": ["--warmup-steps", "100", "--warmup-lr", "0.001", "--optimizer", "adamw", "--steps", "50", "--lr", "0.0002",
                     "--timestep-draws", "2", "--target-max-timestep", "100"],
    "main": ["--model", "base/emoji-base"],
}
ORDERS = {"1": ("1", "hessian"), "2": ("2", "hessian"), "secant": ("2", "secant")}


def train(out: Path, job: str, seed: int, order: str, credit: str) -> float:
    n, curvature = ORDERS[order]
    recipe = [*JOBS[job], "--seed", str(seed), "--order", n, "--credit", credit]
    if n == "2":
        recipe += ["--curvature", curvature]
    manifest = out / "run.json"
    if manifest.is_file():
        config = json.loads(manifest.read_text())["config"]
        same_curvature = n == "1" or config.get("curvature", "hessian") == curvature
        if (config["seed"], config["order"], config.get("credit")) == (seed, int(n), credit) and same_curvature:
            return float(json.loads(manifest.read_text())["seconds"])
    cmd = [sys.executable, "-m", "royalty.cli", "train", "sample_data/train", "--targets", "sample_data/targets",
           "--out", str(out), "--force", "--quiet", *recipe]
    started = time.monotonic()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", choices=sorted(JOBS), default="from-scratch")
    ap.add_argument("--out", type=Path, default=None, help="default: runs/ledger (from-scratch), runs/ledger-main (main)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--orders", default="1,2", help="comma-separated: 1, 2 (Hessian-vector products), secant")
    ap.add_argument("--credits", default="applied")
    args = ap.parse_args()
    out_root = args.out or ROOT / "runs" / ("ledger" if args.job == "from-scratch" else "ledger-main")
    print("| credit | order | seed | Σ measured change | Σ value_sum | Σ unattributed (decay / carried / beyond) "
          "| Σ residual | \\|Σ residual\\| / \\|Σ change\\| | per-step Spearman | train s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for credit in args.credits.split(","):
        for order in args.orders.split(","):
            for seed in map(int, args.seeds.split(",")):
                out = out_root / f"{credit}-order{order}-seed{seed}"
                seconds = train(out, args.job, seed, order, credit)
                s = pd.read_parquet(out / "steps.parquet")
                change = s["target_loss_before"] - s["target_loss_after"]
                accounted = s["value_sum"] + (s["unattributed"] if s["unattributed"].notna().all() else 0.0)
                rho = spearmanr(accounted, change).statistic
                un = "–" if s["unattributed"].isna().any() else (
                    f"{s['unattributed'].sum():.4f} ({s['unattributed_decay'].sum():.4f} / "
                    f"{s['unattributed_carried'].sum():.4f} / {s['unattributed_beyond'].sum():.4f})")
                res = s["residual"].sum()
                share = "–" if pd.isna(res) else f"{abs(res) / abs(change.sum()):.4f}"
                print(f"| {credit} | {order} | {seed} | {change.sum():.4f} | {s['value_sum'].sum():.4f} | {un} "
                      f"| {'–' if pd.isna(res) else f'{res:.4f}'} | {share} | {rho:.3f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
