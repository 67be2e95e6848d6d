"""Fidelity of in-run values against retraining, on sample_data (issue 6).

    python benchmarks/fidelity.py [--out runs/fidelity] [--seeds 2] [--game subset|batch-mask]
                                  [--sgd-lr 0.01] [--adamw-lr 0.0002] [--steps 50]

Trains four sample_data runs — SGD and AdamW, first and second order — and runs
`royalty audit RUN --owners all --seeds 2` on each, then prints the markdown table
BENCHMARKS.md quotes. AdamW is the README's main-job recipe; SGD uses the same warm-up
length and valued steps at lr 0.01 (warm-up lr 0.01 too: SGD at 0.001 barely moves a
model trained from scratch).

A run already in --out with the same recipe is reused. Orders 1 and 2 of one optimizer
train the same trajectory, so they play the same retraining game (the audit's
fingerprint leaves `--order` out): the order-2 audit starts from the order-1 audit's
stored retrainings, and only a fingerprint match lets it use them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMON = ["--warmup-steps", "100", "--timestep-draws", "2", "--target-max-timestep", "100", "--seed", "0"]
RECIPES = {
    "sgd": ["--optimizer", "sgd", "--warmup-lr", "0.01", "--lr", "0.01"],
    "adamw": ["--optimizer", "adamw", "--warmup-lr", "0.001", "--lr", "0.0002"],
}


def recipe_lr(optimizer: str) -> float:
    """The valued phase's lr in the recipe as written (the one the BENCHMARKS table quotes)."""
    recipe = RECIPES[optimizer]
    return float(recipe[recipe.index("--lr") + 1])


def royalty(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "royalty.cli", *args], capture_output=True, text=True, cwd=ROOT)


def train(out: Path, optimizer: str, order: int, steps: int, lr: float) -> float:
    """Train unless a finished run with this recipe is there; returns seconds spent."""
    recipe = [*COMMON, *RECIPES[optimizer], "--order", str(order), "--steps", str(steps)]
    # only the valued phase's lr varies: the warm-up, hence the base, is the same for every lr
    recipe[recipe.index("--lr") + 1] = str(lr)
    manifest = out / "run.json"
    if manifest.is_file():
        config = json.loads(manifest.read_text())["config"]
        expected = dict(zip(recipe[::2], recipe[1::2]))
        if all(str(config[k.lstrip("-").replace("-", "_")]) == v for k, v in expected.items()):
            return 0.0
    started = time.monotonic()
    proc = royalty("train", "sample_data/train", "--targets", "sample_data/targets", "--out", str(out),
                   "--force", "--quiet", *recipe)
    if proc.returncode:
        raise SystemExit(f"training {out} failed ({proc.returncode}):\n{proc.stderr}")
    return time.monotonic() - started


def audit(out: Path, seeds: int, game: str) -> tuple[dict, float]:
    started = time.monotonic()
    proc = royalty("audit", str(out), "--owners", "all", "--seeds", str(seeds), "--game", game, "--quiet")
    if proc.returncode:
        raise SystemExit(f"audit of {out} failed ({proc.returncode}):\n{proc.stderr}")
    return json.loads(proc.stdout), time.monotonic() - started


def share_audit_state(source: Path, dest: Path) -> None:
    """Seed the order-2 run's audit state with the order-1 run's (same game, same fingerprint)."""
    if (source / "audit").is_dir() and not (dest / "audit").exists():
        shutil.copytree(source / "audit", dest / "audit")


def fmt(x, digits: int = 2) -> str:
    if x is None:
        return "–"
    return f"{x:.{digits}f}"


def row(name: str, doc: dict, seconds: float) -> str:
    raw = doc["summary"]["raw"]
    vs, one, floor = raw["in_run_vs_retraining"], raw["in_run_vs_one_seed"], raw["noise_floor"] or {}
    linear = raw.get("in_run_linear_subset_vs_retraining") or {}
    spec = (doc["summary"].get("specific") or {}).get("in_run_vs_retraining") or {}
    first = (doc["summary"].get("first_order_only") or {}).get("in_run_vs_retraining")
    so = doc["second_order"] or {}
    gap_first = so.get("first_order", {}).get("relative_gap")
    gap_both = (so.get("with_second_order") or {}).get("relative_gap")
    cost = doc["cost"]
    return (
        f"| {name} | {fmt(vs['spearman_mean'])} | {fmt(one['spearman_mean'])} | {fmt(floor.get('spearman_mean'))} "
        f"| {fmt(vs['top_owner_agreement'])} | {fmt(floor.get('top_owner_agreement'))} "
        f"| {fmt(vs['l1_share_distance'])} | {fmt(linear.get('l1_share_distance'))} | {fmt(floor.get('l1_share_distance'))} "
        f"| {fmt(vs['sign_agreement'])} | {fmt(linear.get('sign_agreement'))} | {fmt(vs['overall']['spearman'])} "
        f"| {fmt(spec.get('spearman_mean'))} "
        f"| {fmt(first['spearman_mean']) if first else '–'} "
        f"| {fmt(gap_first)}{' → ' + fmt(gap_both) if gap_both is not None else ''} "
        f"| {cost['retrainings_run_now']} × {fmt(cost['seconds_per_retraining'], 0)} s, {seconds:.0f} s |"
    )


HEADER = (
    "| run | Spearman vs retraining | vs one seed | noise floor (seed vs seed) | top owner vs retraining "
    "| top owner, noise floor | L1 shares vs retraining | L1, linear subset map | L1, noise floor | sign agreement "
    "| sign, linear subset map | Spearman of owner totals "
    "| Spearman, specific | Spearman, first order only | efficiency gap per target (1st → 1st+2nd) | audit cost |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "fidelity")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--runs", type=lambda t: t.split(","), default=None,
                        help="comma-separated subset of sgd-o1,adamw-o1,sgd-o2,adamw-o2 (default: all)")
    parser.add_argument("--game", choices=("subset", "batch-mask"), default="subset", help="royalty audit --game")
    parser.add_argument("--sgd-lr", type=float, default=recipe_lr("sgd"), help="learning rate of the SGD runs' valued phase")
    parser.add_argument("--adamw-lr", type=float, default=recipe_lr("adamw"), help="learning rate of the AdamW runs' valued phase")
    parser.add_argument("--steps", type=int, default=50, help="valued steps of every run")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(HEADER, flush=True)
    # order 1 first: the order-2 runs then replay stored games and cost only their training
    for order in (1, 2):
        for optimizer in ("sgd", "adamw"):
            name = f"{optimizer}-o{order}"
            if args.runs and name not in args.runs:
                continue
            # other recipes get other folders: a run folder's audit state belongs to its recipe
            lr = args.sgd_lr if optimizer == "sgd" else args.adamw_lr
            tag = (f"-lr{lr:g}" if lr != recipe_lr(optimizer) else "") + (f"-s{args.steps}" if args.steps != 50 else "")
            run = args.out / f"{name}{tag}"
            train_seconds = train(run, optimizer, order, args.steps, lr)
            if order == 2:
                share_audit_state(args.out / f"{optimizer}-o1{tag}", run)
            doc, seconds = audit(run, args.seeds, args.game)
            suffix = "" if args.game == "subset" else f".{args.game}"
            (args.out / f"{name}{tag}{suffix}.audit.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
            print(row(f"{name}{tag}{suffix}", doc, seconds), flush=True)
            print(f"{name}: trained in {train_seconds:.0f} s, audited in {seconds:.0f} s; checks {doc['checks']}",
                  file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
