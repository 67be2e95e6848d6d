"""The check a GPU machine must pass before README can call `--device cuda` verified.

    python benchmarks/gpu_check.py [--out runs/gpu-check] [--steps 20] [--device cuda]

Trains the same small run (sample_data, 16 px, AdamW, order 2) three times: on the CPU,
and twice on `cuda`. Prints one JSON document:
- whether the two GPU runs wrote byte-identical values.parquet (determinism);
- the largest difference between GPU and CPU values, relative to the largest CPU value,
  for each value column, and the owner shares of each (their L1 distance);
- the seconds of each run.
Exits 1 if CUDA is missing, the GPU runs differ, or GPU and CPU values differ by more
than 1e-4 of the largest value (float32 rounding over 20 steps is ~1e-6; a device bug
is O(1)). Needs no network: the model is built from code. `--device cpu` runs the same
comparison CPU against CPU (differences 0): a check of this script on a machine without
a GPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4
COLUMNS = ("value_first_order", "value_second_order", "value", "value_specific")


def train(out: Path, device: str, steps: int) -> float:
    # the CLI's progress lines go to stderr as it runs, so a log shows which run is slow
    print(f"gpu_check: training {out.name} on {device}", file=sys.stderr, flush=True)
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable, "-m", "royalty.cli", "train", str(ROOT / "sample_data/train"),
            "--targets", str(ROOT / "sample_data/targets"), "--out", str(out), "--force",
            "--resolution", "16", "--steps", str(steps), "--optimizer", "adamw", "--lr", "0.001",
            "--order", "2", "--timestep-draws", "2", "--device", device,
        ],
        check=True, stdout=subprocess.DEVNULL,
    )
    took = time.monotonic() - started
    print(f"gpu_check: {out.name} done in {took:.1f} s", file=sys.stderr, flush=True)
    return took


def shares(values: pd.DataFrame) -> pd.Series:
    per_owner = values.groupby("owner")["value"].sum().clip(lower=0)
    return per_owner / per_owner.sum()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default="cuda", help="the device checked against the CPU")
    args = ap.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(json.dumps({"ok": False, "why": f"torch {torch.__version__} sees no CUDA GPU"}))
        return 1
    seconds = {name: train(args.out / name, device, args.steps) for name, device in (("cpu", "cpu"), ("device-a", args.device), ("device-b", args.device))}
    files = {name: args.out / name / "values.parquet" for name in seconds}
    identical = files["device-a"].read_bytes() == files["device-b"].read_bytes()
    cpu, gpu = pd.read_parquet(files["cpu"]), pd.read_parquet(files["device-a"])
    if not (cpu[["sample_id", "target_id"]].equals(gpu[["sample_id", "target_id"]])):
        print(json.dumps({"ok": False, "why": "CPU and GPU runs wrote different rows"}))
        return 1
    relative = {
        c: float((gpu[c] - cpu[c]).abs().max() / max(cpu[c].abs().max(), 1e-300)) for c in COLUMNS if c in cpu.columns
    }
    report = {
        "device": args.device,
        "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device_runs_byte_identical": identical,
        "max_relative_difference_vs_cpu": relative,
        "owner_shares_l1_vs_cpu": float((shares(gpu) - shares(cpu)).abs().sum()),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "tolerance": TOLERANCE,
    }
    report["ok"] = identical and all(v <= TOLERANCE for v in relative.values())
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
