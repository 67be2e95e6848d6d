"""`royalty train` on 1 vs 2 CPU processes (torchrun / accelerate, gloo), measured side by side.

    python benchmarks/distributed.py [--steps 12] [--repeats 2] [--targets 4 24]

On the shipped sample data (32 px, default tiny UNet, --batch-size 16, one timestep draw
per target), for each number of targets K, runs plain training (--no-values) and valued
training in these layouts of the machine's two cores: one process with two threads
(OMP_NUM_THREADS=2), one process with one thread, and two processes with one thread
each under torchrun (and under `accelerate launch --multi_gpu` when accelerate is
installed), alternating all runs per repeat so that load from anything else on the
machine falls on all of them alike. Prints, per layout, images/s (training rows per
second of `train()`, from run.json's `seconds`: model setup and writing the outputs
included, process startup excluded), the value overhead (valued / plain time) and the
speed-ups over the one-process layouts. The load average before and after says whether
the machine was busy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BATCH = 16


def _run(out: Path, targets: Path, steps: int, processes: int, threads: int, values: bool, launcher: str) -> float:
    """Seconds of `train()` for one run."""
    args = ["train", str(ROOT / "sample_data" / "train"), "--targets", str(targets), "--out", str(out), "--force",
            "--steps", str(steps), "--batch-size", str(BATCH), "--timestep-draws", "1", "--lr", "0.001", "--quiet"]
    if not values:
        args.append("--no-values")
    env = {**os.environ, "NO_COLOR": "1", "OMP_NUM_THREADS": str(threads)}
    if processes == 1:
        cmd = [sys.executable, "-m", "royalty.cli", *args]
    elif launcher == "accelerate":
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
               "--num_machines", "1", "--dynamo_backend", "no", "--mixed_precision", "no", "-m", "royalty.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               "-m", "royalty.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return float(json.loads((out / "run.json").read_text())["seconds"])


def _targets(k: int, tmp: Path) -> Path:
    """The first k sample targets (by file name), as a folder of bare images."""
    folder = tmp / f"targets-{k}"
    folder.mkdir()
    images = sorted((ROOT / "sample_data" / "targets").glob("*.png"))
    if k > len(images):
        raise SystemExit(f"the sample data has only {len(images)} targets")
    for image in images[:k]:
        shutil.copy(image, folder / image.name)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--targets", type=int, nargs="+", default=[4, 24])
    args = parser.parse_args()

    load_before = os.getloadavg()
    print(f"cores {os.cpu_count()}, load average before {load_before[0]:.2f}; batch {BATCH}, {args.steps} steps, "
          f"median of {args.repeats}", flush=True)
    # (processes, threads each, launcher); accelerate's --multi_gpu starts the same processes as torchrun
    layouts = [(1, 2, "-"), (1, 1, "-"), (2, 1, "torchrun")]
    if importlib.util.find_spec("accelerate") is not None:
        layouts.append((2, 1, "accelerate"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for k in args.targets:
            targets = _targets(k, tmp)
            times: dict[tuple[int, int, str, bool], list[float]] = {}
            for _ in range(args.repeats):
                for processes, threads, launcher in layouts:
                    for values in (False, True):
                        seconds = _run(tmp / "run", targets, args.steps, processes, threads, values, launcher)
                        times.setdefault((processes, threads, launcher, values), []).append(seconds)
            med = {key: statistics.median(v) for key, v in times.items()}
            for processes, threads, launcher in layouts:
                plain, valued = med[(processes, threads, launcher, False)], med[(processes, threads, launcher, True)]
                layout = f"{processes} × {threads}" + (f" ({launcher})" if processes > 1 else "")
                rows.append((k, layout, BATCH * args.steps / plain, BATCH * args.steps / valued,
                             valued / plain, med[(1, 2, "-", True)] / valued, med[(1, 1, "-", True)] / valued))
    load_after = os.getloadavg()

    print()
    print("| targets K | processes × threads | plain img/s | valued img/s | value overhead (valued/plain) | valued speed-up vs 1 × 2 | valued speed-up vs 1 × 1 |")
    print("|---|---|---|---|---|---|---|")
    for k, layout, plain, valued, overhead, up2, up1 in rows:
        print(f"| {k} | {layout} | {plain:.1f} | {valued:.1f} | {overhead:.2f}× | {up2:.2f}× | {up1:.2f}× |")
    print(f"\nload average after {load_after[0]:.2f} (before {load_before[0]:.2f}) on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
