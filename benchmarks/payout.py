"""Benchmark `royalty payout` on a run-sized values table.

1,000,000 value rows (10,000 images × 100 targets, 500 owners), written as a verified
run folder; then the payout is timed end to end in-process (verify the values file's
sha256, read parquet, validate, exact sums, allocation, statement, JSON rendering) for
--revenue, and for --sales with a 10,000-sale ledger. Goal: under 3 s on a 2-core CPU.

    python benchmarks/payout.py [--images 10000] [--targets 100] [--owners 500] [--repeat 3]

The CLI adds its import time on top (printed separately, as it depends on which other
commands are installed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from royalty.attribution.contract import run_folder
from royalty.payout.formats import render
from royalty.payout.service import PayoutRequest, compute_payout

GOAL_S = 3.0


def build_run(root: Path, images: int, targets: int, owners: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    sample_ids = np.array([f"img{i:06d}" for i in range(images)])
    owner_of = np.array([f"owner{o:04d}" for o in range(owners)])[np.arange(images) % owners]
    target_ids = np.array([f"target{t:04d}" for t in range(targets)])
    # Values like a real run's: a common positive component plus owner/target noise.
    values = 1e-4 + 3e-4 * rng.standard_normal(images * targets)
    frame = pd.DataFrame(
        {
            "sample_id": np.repeat(sample_ids, targets),
            "owner": np.repeat(owner_of, targets),
            "target_id": np.tile(target_ids, images),
            "value": values,
            "value_first_order": values,
            "value_second_order": np.zeros_like(values),
        }
    )
    root.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(root / run_folder.VALUES, index=False)
    manifest = {
        "format_version": run_folder.FORMAT_VERSION,
        "run_id": "benchmark",
        "outputs": run_folder.output_hashes(root),
    }
    run_folder.write_manifest(root, manifest)
    return root


def write_sales(path: Path, targets: int, sales: int, seed: int = 1) -> Path:
    rng = np.random.default_rng(seed)
    with path.open("w", encoding="utf-8") as fh:
        fh.write("sale_id,target_id,amount,currency,date\n")
        for i in range(sales):
            cents = int(rng.integers(1, 100_000))
            fh.write(f"s{i},target{int(rng.integers(targets)):04d},{cents // 100}.{cents % 100:02d},USD,2024-01-01\n")
    return path


def timed(request: PayoutRequest, repeat: int) -> tuple[float, dict]:
    best = float("inf")
    doc: dict = {}
    for _ in range(repeat):
        start = time.perf_counter()
        doc = compute_payout(request, now="2024-01-01T00:00:00Z")
        render(doc, "json")
        best = min(best, time.perf_counter() - start)
    return best, doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--targets", type=int, default=100)
    parser.add_argument("--owners", type=int, default=500)
    parser.add_argument("--sales", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        run = build_run(Path(tmp) / "run", args.images, args.targets, args.owners)
        sales = write_sales(Path(tmp) / "sales.csv", args.targets, args.sales)
        rows = args.images * args.targets

        revenue_s, doc = timed(PayoutRequest(run_dir=run, revenue="1000000.00"), args.repeat)
        assert doc["totals"]["paid"]["minor"] + doc["totals"]["carried_forward"]["minor"] == 100_000_000
        sales_s, sdoc = timed(PayoutRequest(run_dir=run, sales=sales), args.repeat)

        env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
        start = time.perf_counter()
        cli = subprocess.run(
            [sys.executable, "-m", "royalty.cli", "payout", str(run), "--revenue", "1000000.00", "-q"],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        cli_s = time.perf_counter() - start
        json.loads(cli.stdout)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "royalty.cli", "--version"], capture_output=True, check=True)
        startup_s = time.perf_counter() - start

    result = {
        "rows": rows,
        "images": args.images,
        "targets": args.targets,
        "owners": args.owners,
        "revenue_payout_s": round(revenue_s, 3),
        "sales_payout_s": round(sales_s, 3),
        "sales": args.sales,
        "cli_revenue_payout_s": round(cli_s, 3),
        "cli_startup_s": round(startup_s, 3),
        "payees_paid": doc["totals"]["payees_paid"],
        "goal_s": GOAL_S,
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(result, indent=2))
    print(
        f"payout of {rows:,} value rows ({args.owners} owners): --revenue {revenue_s:.2f} s, "
        f"--sales ({args.sales:,} sales) {sales_s:.2f} s, CLI end to end {cli_s:.2f} s "
        f"(of which {startup_s:.2f} s CLI start-up); goal < {GOAL_S:.0f} s",
        file=sys.stderr,
    )
    return 0 if revenue_s < GOAL_S and sales_s < GOAL_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
