"""Cost and variance of the cheaper target-side estimators (K = 100 targets unless --targets).

    python benchmarks/estimators.py [--steps 12] [--reps 3] [--targets 100] [--subsets 10 25]

One training trajectory (tiny UNet, 16 px, SGD, B=16); at every step the same batch is
valued by each estimator. The *exact* mode uses M=4 fixed draws per target (seed 0).
For each estimator, over `--reps` independent estimator seeds, it reports the engine's
milliseconds per step and the relative error of the run's summed values against exact
mode, ‖V − V_exact‖ / ‖V_exact‖, over all (sample, target) pairs, over the (owner, target)
sums and over the owners' totals. The row "exact, other draws" is exact mode with another
draw seed: the error any choice of draws carries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from royalty.attribution.data.folders import load_targets, load_training_data
from royalty.attribution.model.diffusion import PixelDiffusion, build_default_unet, default_scheduler, noise_prediction_losses
from royalty.attribution.training.draws import batch_indices, noise_draws
from royalty.attribution.engine.hvp import TargetSide
from royalty.attribution.engine.step import EngineConfig, Update, ValueEngine
from royalty.attribution.model.task import Inputs
from royalty.attribution.training.targets import TargetPlan

ROOT = Path(__file__).resolve().parent.parent / "sample_data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--targets", type=int, default=100)
    ap.add_argument("--subsets", type=int, nargs="+", default=[10, 25], help="S of the subset and rotation rows")
    args = ap.parse_args()
    res, b, lr, draws = 16, 16, 0.02, 4
    train = load_training_data(ROOT / "train", res)
    pool = torch.cat([load_targets(ROOT / "targets", res).images, train.images])  # targets: held-out, then train images
    k = args.targets
    groups = tuple(Inputs(pool[i : i + 1]) for i in range(k))

    def plan(estimator: str, seed: int, subset: int = 0) -> TargetPlan:
        return TargetPlan(groups, k, draws, 250, estimator, subset, seed)

    estimators = {"exact": [plan("exact", 0)], "exact, other draws": [plan("exact", 100 + r) for r in range(args.reps)]}
    estimators["fresh (1 draw/step)"] = [plan("fresh", 200 + r) for r in range(args.reps)]
    for s in args.subsets:
        estimators[f"subset S={s}"] = [plan("subset", 300 + 10 * s + r, s) for r in range(args.reps)]
    for s in args.subsets:
        estimators[f"rotation S={s}"] = [plan("rotation", 600 + 10 * s + r, s) for r in range(args.reps)]

    unet = build_default_unet(res, seed=0)
    sched = default_scheduler()
    opt = torch.optim.SGD(unet.parameters(), lr=lr)
    engine = ValueEngine(unet, EngineConfig(self_check=False))
    totals = {name: [torch.zeros(len(train), k, dtype=torch.float64) for _ in plans] for name, plans in estimators.items()}
    seconds = {name: 0.0 for name in estimators}
    task = PixelDiffusion(unet, sched)
    for step in range(args.steps):
        idx = batch_indices(0, step, b, len(train))
        x0 = train.images[idx]
        t, noise = noise_draws(0, "train", step, b, tuple(x0.shape[1:]), 1000)
        for name, plans in estimators.items():
            for r, p in enumerate(plans):
                rows = p.rows(step)
                opt.zero_grad(set_to_none=True)
                start = time.perf_counter()
                sv = engine.step(
                    lambda: noise_prediction_losses(unet, sched, x0, t, noise),
                    TargetSide(lambda sel: task.losses(rows.select(sel)), rows.slot, len(rows.columns)),
                    Update(lr),
                )
                seconds[name] += (time.perf_counter() - start) / len(plans)
                full = torch.zeros(b, k, dtype=torch.float64).index_copy(1, rows.columns, sv.first * rows.scale)
                totals[name][r].index_add_(0, idx, full)  # each sample's value summed over the run
        opt.step()  # the update is the same whichever estimator valued the step
        print(f"step {step + 1}/{args.steps}", flush=True)

    # what a payout sums: each owner's values per target
    owners = sorted(set(train.owners))
    by_owner = torch.zeros(len(owners), len(train), dtype=torch.float64)
    by_owner[[owners.index(o) for o in train.owners], torch.arange(len(train))] = 1.0
    exact = totals["exact"][0]
    exact_owner = by_owner @ exact

    def rel(v: torch.Tensor, ref: torch.Tensor) -> float:
        return float((v - ref).norm() / ref.norm())

    print(f"\nK={k} targets, B={b}, {res} px, {args.steps} steps, {len(owners)} owners, {args.reps} estimator seeds each")
    print("| estimator | target rows/step | ms/step | × exact | rel. error of summed values (mean ± sd) "
          "| of owner × target sums | of owner totals (what a payout splits) |")
    print("|---|---|---|---|---|---|---|")
    base = seconds["exact"] / args.steps * 1000
    for name, plans in estimators.items():
        ms = seconds[name] / args.steps * 1000
        rows = len(plans[0].rows(0).slot)
        if name == "exact":
            print(f"| {name} (M={draws}) | {rows} | {ms:.0f} | 1.00 | 0 (reference) | 0 | 0 |")
            continue
        errs = torch.tensor([rel(v, exact) for v in totals[name]])
        owner_errs = torch.tensor([rel(by_owner @ v, exact_owner) for v in totals[name]])
        total_errs = torch.tensor([rel((by_owner @ v).sum(1), exact_owner.sum(1)) for v in totals[name]])
        print(f"| {name} | {rows} | {ms:.0f} | {ms / base:.2f} | {errs.mean():.3f} ± {errs.std():.3f} "
              f"| {owner_errs.mean():.3f} ± {owner_errs.std():.3f} | {total_errs.mean():.3f} ± {total_errs.std():.3f} |")


if __name__ == "__main__":
    main()
