"""Does the owner with the largest summed value match each target's true owner?

    python benchmarks/owner_accuracy.py RUN [RUN ...] [--audit AUDIT.json ...] [--targets DIR]

Reads each RUN's values.parquet and the targets' metadata (`owner` column: the true owner
of single-style targets, empty for mixed ones; default: the run's own targets folder) and
prints, for one RUN, one line per target; then, for all RUNs side by side (e.g. three
seeds of the same command), the share of single-style targets whose top owner is the true
one, for each basis:

- the in-run values, `value` and `value_specific`;
- with `--audit` (the JSON documents `royalty audit RUN` printed, matched to the RUNs by
  run id): the ground truth the values approximate, retraining Shapley (raw, and its
  contrast game, the retraining counterpart of `value_specific`) and leave-one-owner-out.
  If retraining itself does not put the style's owner on top, no attribution of the
  run can;
- the model-free style baselines of `benchmarks/style_baselines.py` on the run's own
  training and target images (nearest owner centroid on raw pixels and on edge-strength
  histograms): how much plain image statistics already reach.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from style_baselines import load_images, predict_owners

STYLE_BASELINES = ("pixels", "edge-strength histogram")  # with the nearest-centroid ("distance") rule


def owner_table(values: pd.DataFrame, column: str) -> pd.DataFrame:
    """[target × owner] summed values."""
    return values.groupby(["target_id", "owner"])[column].sum().unstack("owner")


def audit_tables(doc: dict) -> dict[str, pd.DataFrame]:
    """[target × owner] retraining Shapley, its contrast game, and leave-one-out."""
    rows = {t["target_id"]: t for t in doc["targets"]}
    shapley = pd.DataFrame({k: r["retraining_shapley"] for k, r in rows.items()}).T
    tables = {"retraining Shapley": shapley, "retraining Shapley, specific": shapley - shapley.mean(axis=0)}
    if all(r["leave_one_out"] is not None for r in rows.values()):
        tables["leave-one-out"] = pd.DataFrame({k: r["leave_one_out"] for k, r in rows.items()}).T
    return tables


def style_baseline_tops(train_dir: Path, targets_dir: Path) -> dict[str, pd.Series]:
    """Per baseline: target_id → the owner whose training-image centroid is nearest."""
    train = pd.read_csv(train_dir / "metadata.csv", dtype=str, keep_default_na=False)
    targets = pd.read_csv(targets_dir / "metadata.csv", dtype=str, keep_default_na=False)
    x, y = load_images(train_dir, train["file_name"]), load_images(targets_dir, targets["file_name"])
    return {
        f"{name} (no model)": pd.Series(predict_owners(x, train["owner"].to_numpy(), y, name, "distance"), index=targets["target_id"])
        for name in STYLE_BASELINES
    }


def run_tops(run: Path, audit: dict | None) -> dict[str, pd.Series]:
    """Per basis: target_id → the owner with the largest value."""
    values = pd.read_parquet(run / "values.parquet")
    tables = {b: owner_table(values, b) for b in ("value", "value_specific") if b in values.columns}
    if audit is not None:
        tables.update(audit_tables(audit))
    return {b: t.idxmax(axis=1) for b, t in tables.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", metavar="RUN")
    ap.add_argument("--targets", type=Path, default=None, help="default: the targets folder the first RUN was trained on")
    ap.add_argument("--audit", type=Path, action="append", default=[], help="the JSON document of `royalty audit RUN` (repeatable)")
    args = ap.parse_args()
    manifests = [json.loads((r / "run.json").read_text()) for r in args.runs]
    config = manifests[0]["config"]
    targets_dir = args.targets or Path(config["targets"])
    meta = pd.read_csv(targets_dir / "metadata.csv", dtype=str, keep_default_na=False)
    truth = dict(zip(meta["target_id"], meta["owner"]))
    mix = dict(zip(meta["target_id"], meta.get("mix", pd.Series([""] * len(meta)))))
    audits = {doc["run_id"]: doc for doc in (json.loads(p.read_text()) for p in args.audit)}
    unmatched = set(audits) - {m["run_id"] for m in manifests}
    if unmatched:
        raise SystemExit(f"--audit documents of runs not given: run ids {sorted(unmatched)}")
    style = style_baseline_tops(Path(config["data"]), targets_dir)
    per_run = [{**run_tops(run, audits.get(m["run_id"])), **style} for run, m in zip(args.runs, manifests)]
    single = [t for t in per_run[0]["value"].index if truth.get(t, "")]

    if len(args.runs) == 1:
        tops = per_run[0]
        print(f"{'target':<26} {'true owner':<20} " + " ".join(f"{b:<24}" for b in tops))
        for target in tops["value"].index:
            true = truth.get(target, "")
            label = true or f"mix {mix.get(target, '')}"
            cells = [tops[b].get(target, "–") for b in tops]
            print(f"{target:<26} {label:<20} " + " ".join(f"{c + (' ✓' if c == true else ''):<24}" for c in cells))
        print()

    seeds = [str(m["config"]["seed"]) for m in manifests]
    owners = pd.read_csv(Path(config["data"]) / "metadata.csv", dtype=str, keep_default_na=False)["owner"].nunique()
    print(f"True owner on top, {len(single)} single-style targets (chance {100 / owners:.0f} %):\n")
    print("| basis | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |")
    print("|---|" + "---|" * (len(seeds) + 1))
    for basis in dict.fromkeys(b for tops in per_run for b in tops):
        cells, shares = [], []
        for tops in per_run:
            if basis not in tops:
                cells.append("–")
                continue
            hits = sum(tops[basis].get(t) == truth[t] for t in single)
            shares.append(hits / len(single))
            cells.append(f"{hits}/{len(single)} ({100 * hits / len(single):.0f} %)")
        print(f"| {basis} | " + " | ".join(cells) + f" | {100 * np.mean(shares):.0f} % |")


if __name__ == "__main__":
    main()
