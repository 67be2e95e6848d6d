"""Does the owner with the largest summed value match each target's true owner?

    python benchmarks/owner_accuracy.py RUN [--targets sample_data/targets] [--audit AUDIT.json]

Reads RUN/values.parquet and the targets' metadata (`owner` column: the true owner of
single-style targets, empty for mixed ones) and prints one line per target and the
share of single-style targets whose top owner is the true one, for each value basis.

`--audit`: the JSON document `royalty audit RUN` printed. The same question is then
asked of the ground truth the values approximate: retraining Shapley (raw, and minus
each owner's mean over all targets, the contrast game of `value_specific`) and
leave-one-owner-out. If retraining itself does not put the style's owner on top, no
attribution of this training run can.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--targets", type=Path, default=Path("sample_data/targets"))
    ap.add_argument("--audit", type=Path, help="the JSON document of `royalty audit RUN`")
    args = ap.parse_args()
    values = pd.read_parquet(args.run / "values.parquet")
    meta = pd.read_csv(args.targets / "metadata.csv", dtype=str, keep_default_na=False)
    truth = dict(zip(meta["target_id"], meta["owner"]))
    mix = dict(zip(meta["target_id"], meta.get("mix", pd.Series([""] * len(meta)))))
    bases = [c for c in ("value", "value_specific") if c in values.columns]
    tables = {b: owner_table(values, b) for b in bases}
    if args.audit is not None:
        tables.update(audit_tables(json.loads(args.audit.read_text())))
        bases = list(tables)
    print(f"{'target':<22} {'true owner':<12} " + " ".join(f"{'top by ' + b:<22}" for b in bases))
    hits = {b: 0 for b in bases}
    n_single = 0
    for target in tables[bases[0]].index:
        true = truth.get(target, "")
        tops = {b: tables[b].loc[target].idxmax() for b in bases}
        if true:
            n_single += 1
            for b in bases:
                hits[b] += tops[b] == true
        label = true or f"mix {mix.get(target, '')}"
        print(f"{target:<22} {label:<12} " + " ".join(f"{tops[b] + (' ✓' if tops[b] == true else ''):<22}" for b in bases))
    for b in bases:
        print(f"{b}: true owner on top for {hits[b]}/{n_single} single-style targets ({100 * hits[b] / max(n_single, 1):.0f}%)")


if __name__ == "__main__":
    main()
