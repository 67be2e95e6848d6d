"""How close is `royalty attribute --mode checkpoints` to the exact replay, and how much faster?

    python benchmarks/attribute.py [--out runs/bench-attribute] [--every 5 25]

Trains the from-scratch job (README, "Training without a base") on sample_data with a checkpoint every min(--every) steps,
then attributes sample_data/targets three ways — replay (exact), and checkpoints with
windows of each k in --every (a copy of the run keeping only the checkpoints at
multiples of k) — timing each command end to end, and compares, per target, the
owners' summed values: Spearman over owners (mean over targets, and pooled over every
target × owner pair), top-owner agreement, and the largest difference of an owner's
revenue share (shares as payout computes them: clipped at 0, normalised per target).
It also checks that replay reproduced the run's own values.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

RECIPE = (
    "--warmup-steps", "100", "--warmup-lr", "0.001", "--optimizer", "adamw", "--steps", "50",
    "--lr", "0.0002", "--timestep-draws", "2", "--target-max-timestep", "100",
)
TARGETS = Path("sample_data/targets")


def royalty(*args: object) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "royalty.cli", *map(str, args), "--quiet"], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def owner_table(path: Path, column: str) -> pd.DataFrame:
    return pd.read_parquet(path).groupby(["target_id", "owner"])[column].sum().unstack("owner").sort_index()


def shares(table: pd.DataFrame) -> pd.DataFrame:
    clipped = table.clip(lower=0)
    return clipped.div(clipped.sum(axis=1).replace(0, np.nan), axis=0).fillna(0)


def compare(exact: pd.DataFrame, approx: pd.DataFrame) -> dict[str, float]:
    per_target = [spearmanr(exact.loc[t], approx.loc[t]).statistic for t in exact.index]
    return {
        "spearman_mean": float(np.nanmean(per_target)),
        "spearman_pooled": float(spearmanr(exact.to_numpy().ravel(), approx.to_numpy().ravel()).statistic),
        "top_owner_agree": float((exact.idxmax(axis=1) == approx.idxmax(axis=1)).mean()),
        "max_share_error": float((shares(exact) - shares(approx)).abs().to_numpy().max()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-attribute"))
    ap.add_argument("--every", type=int, nargs="+", default=[5, 25])
    args = ap.parse_args()
    base = min(args.every)
    if any(k % base for k in args.every):
        raise SystemExit("every --every value must be a multiple of the smallest")
    run = args.out / "run"
    train_s = royalty("train", "sample_data/train", "--targets", TARGETS, "--out", run, "--force", *RECIPE, "--checkpoint-every", base)
    replay_s = royalty("attribute", run, TARGETS, "--name", "replay", "--force")
    own = pd.read_parquet(run / "values.parquet")
    replayed = pd.read_parquet(run / "attributions" / "replay" / "values.parquet")
    rel = float((own["value"] - replayed["value"]).abs().max() / own["value"].abs().max())
    print(f"train (from-scratch job + checkpoints every {base}): {train_s:.1f} s; replay: {replay_s:.1f} s; "
          f"replay vs the run's own values: max relative difference {rel:.2e}")
    rows = []
    for k in args.every:
        copy = args.out / f"run-k{k}"
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(run, copy)
        for ck in (copy / "checkpoints").glob("step-*.pt"):
            if int(ck.stem[5:]) % k:
                ck.unlink()
        seconds = royalty("attribute", copy, TARGETS, "--mode", "checkpoints", "--name", "ck")
        for column in ("value", "value_specific"):
            exact = owner_table(run / "attributions" / "replay" / "values.parquet", column)
            approx = owner_table(copy / "attributions" / "ck" / "values.parquet", column)
            rows.append({"k": k, "basis": column, "seconds": seconds, "speed_up": replay_s / seconds, **compare(exact, approx)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda x: f"{x:.3f}"))


if __name__ == "__main__":
    main()
