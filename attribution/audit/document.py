"""The audit document: retraining Shapley beside the in-run values, and how well they agree.

Comparisons, each on the raw game and (where the run has `value_specific`) the specific
game — by linearity its Shapley value is the raw one minus the reference's, exactly as
the run derives `value_specific`:

- `in_run_vs_retraining`: in-run owner values vs retraining Shapley averaged over seeds;
- `in_run_vs_one_seed`: the same against each seed alone, averaged over seeds — the
  like-for-like comparison with the noise floor;
- `noise_floor`: one retraining seed against another (every pair, averaged): how well
  retraining agrees with itself. In-run values within or above it are as good as a
  second retraining would be;
- `in_run_linear_subset_vs_retraining` (subset game only): the in-run values mapped to
  the Shapley values the subset game would have if training were linear in its steps
  (`subset_linear`), against retraining. For owners of equal size the map keeps each
  target's order of owners and stretches their differences: it tells apart what the
  game's structure explains (shares, signs) from what the values get wrong.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import numpy as np

from royalty.attribution.audit.service import FORMAT_VERSION, Outcome, shapley_by_seed
from royalty.attribution.audit.metrics import agreement, efficiency_trace, mean_agreement, shares
from royalty.attribution.audit.retrain import SEED_STRIDE
from royalty.attribution.contract.run_folder import SPECIFIC_COLUMN
from royalty.attribution.audit.owner_accuracy import owner_accuracy
from royalty.attribution.audit.subset_linear import linear_subset_shapley


UTILITY = {
    "subset": "target loss of the base model (after warm-up) minus target loss after the valued phase on the coalition's images",
    "batch-mask": "target loss of the base model (after warm-up) minus target loss after the valued phase on the run's "
    "batches with the rows of owners outside the coalition dropped",
}


def _matrix(values: dict, players: tuple[str, ...]) -> np.ndarray:
    return np.stack([np.asarray(values[p], dtype=np.float64) for p in players])


def _in_run(outcome: Outcome, column: str, owners: list[str] | None = None) -> np.ndarray:
    """[owners, targets]: the run's values summed per owner (default: the players), in the run's target order."""
    run = outcome.run
    owners = list(outcome.plan.players) if owners is None else owners
    sums = run.values.groupby(["owner", "target_id"], sort=False)[column].sum()
    table = sums.unstack("target_id").reindex(index=owners, columns=list(run.targets.ids))
    return table.fillna(0.0).to_numpy(dtype=np.float64)


def _specific(phi: np.ndarray, run) -> np.ndarray | None:
    """[players, columns] → the specific game's values [players, targets]."""
    k = len(run.targets)
    kind = run.manifest.get("reference")
    if kind == "targets-mean":
        return phi[:, :k] - phi[:, :k].mean(axis=1, keepdims=True)
    if kind == "folder":
        return phi[:, :k] - phi[:, k : k + 1]
    return None


def _as_subset_game(outcome: Outcome, column: str, in_run: np.ndarray) -> np.ndarray | None:
    """[players, targets]: the in-run values through the subset game's small-step limit."""
    run, plan = outcome.run, outcome.plan
    if plan.game != "subset":  # batch-mask keeps the run's batches: linear, it is additive
        return None
    counts = Counter(run.train.owners)
    background = _in_run(outcome, column, sorted(plan.background)).sum(axis=0) if plan.background else None
    index = {p: i for i, p in enumerate(plan.players)}
    return linear_subset_shapley(
        in_run, [counts[p] for p in plan.players], background,
        sum(counts[o] for o in plan.background), [tuple(index[p] for p in perm) for perm in plan.permutations],
    )


def _comparisons(outcome: Outcome, column: str, per_seed: list[np.ndarray]) -> dict[str, Any]:
    """The run's `column` summed per owner against retraining's per-seed Shapley values."""
    in_run = _in_run(outcome, column)
    mean = np.mean(per_seed, axis=0)
    doc = {
        "in_run_vs_retraining": agreement(in_run, mean),
        "in_run_vs_one_seed": mean_agreement([agreement(in_run, p) for p in per_seed]),
        "noise_floor": mean_agreement([agreement(a, b) for a, b in itertools.combinations(per_seed, 2)]),
    }
    linear = _as_subset_game(outcome, column, in_run)
    if linear is not None:
        doc["in_run_linear_subset_vs_retraining"] = agreement(linear, mean)
    return doc


def build_report(outcome: Outcome) -> dict[str, Any]:
    run, plan = outcome.run, outcome.plan
    players, k = plan.players, len(run.targets)
    seeds = shapley_by_seed(plan, outcome.base_losses, outcome.records)
    work = plan.work()
    done = sum(1 for key in work if key in outcome.records)
    doc: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "run": str(run.dir),
        "run_id": run.manifest.get("run_id"),
        "complete": done == len(work),
        "game": {
            "players": list(players),
            "background_owners": sorted(plan.background),
            "method": plan.method,
            "permutations": len(plan.permutations) or None,
            "seeds": plan.seeds,
            "seeds_complete": sorted(seeds),
            "retraining_seeds": [run.config.seed + SEED_STRIDE * s for s in range(plan.seeds)],
            "valued_steps": run.total_steps,
            "warmup_steps": run.config.warmup_steps,
            "optimizer": run.config.optimizer,
            "lr": run.config.lr,
            "order": run.config.order,
            "estimator": run.config.estimator,
            "game": plan.game,
            "utility": UTILITY[plan.game],
        },
        "cost": {
            "seconds": round(outcome.seconds, 3),
            "base_seconds": round(outcome.base_seconds, 3),
            "retrainings_needed": len(work),
            "retrainings_done": done,
            "retrainings_run_now": outcome.trained_now,
            "retrainings_stored_before": outcome.stored_before,
            "seconds_per_retraining": _mean([r.seconds for key, r in outcome.records.items() if key in set(work)]),
            "stopped_by_budget": outcome.stopped_by_budget,
        },
        "notes": outcome.notes,
        "checks": _checks(outcome),
        "efficiency": efficiency_trace(run.steps),
        "summary": None,
        "second_order": _second_order(outcome),
        "owner_accuracy": None,
        "owners": None,
        "targets": None,
    }
    if not seeds:
        return doc

    phi = {s: _matrix(r["shapley"], players) for s, r in seeds.items()}  # [players, columns]
    raw = [phi[s][:, :k] for s in sorted(phi)]
    summary: dict[str, Any] = {"raw": _comparisons(outcome, "value", raw)}
    specific = None  # the contrast game's Shapley values per seed, where the run has `value_specific`
    if SPECIFIC_COLUMN in run.values.columns:
        per_seed = [_specific(phi[s], run) for s in sorted(phi)]
        if per_seed[0] is not None:
            specific = per_seed
            summary["specific"] = _comparisons(outcome, SPECIFIC_COLUMN, specific)
    if run.config.order == 2:
        summary["first_order_only"] = _comparisons(outcome, "value_first_order", raw)
    loos = [_matrix(r["loo"], players)[:, :k] for s, r in sorted(seeds.items()) if r["loo"] is not None]
    if loos:
        summary["leave_one_out_vs_retraining"] = agreement(np.mean(loos, axis=0), np.mean(raw, axis=0))
    doc["summary"] = summary
    doc["owner_accuracy"] = _owner_accuracy(outcome, raw, specific, loos)

    doc["owners"], doc["targets"] = _tables(outcome, seeds, raw, loos)
    return doc


def _owner_accuracy(outcome: Outcome, raw: list, specific: list | None, loos: list) -> dict[str, Any] | None:
    """Each basis's top owner against the targets' own `owner` column (where they name one)."""
    run, players = outcome.run, outcome.plan.players
    bases = {"in_run": _in_run(outcome, "value")}
    if SPECIFIC_COLUMN in run.values.columns:
        bases["in_run_specific"] = _in_run(outcome, SPECIFIC_COLUMN)
    bases["retraining_shapley"] = np.mean(raw, axis=0)
    if specific is not None:
        bases["retraining_shapley_specific"] = np.mean(specific, axis=0)
    if loos:
        bases["leave_one_out"] = np.mean(loos, axis=0)
    return owner_accuracy(players, run.targets.owners, bases)


def _tables(outcome: Outcome, seeds: dict, raw: list[np.ndarray], loos: list[np.ndarray]) -> tuple[list, list]:
    """Per owner and per target: in-run values beside retraining Shapley (and leave-one-out)."""
    run, players = outcome.run, outcome.plan.players
    in_run = _in_run(outcome, "value")
    mean_phi = np.mean(raw, axis=0)
    mean_loo = np.mean(loos, axis=0) if loos else None
    counts = Counter(run.train.owners)
    in_run_shares, retrain_shares = shares(in_run.sum(axis=1)), shares(mean_phi.sum(axis=1))
    owners = [
        {
            "owner": p,
            "images": counts[p],
            "in_run": float(in_run[i].sum()),
            "retraining_shapley": float(mean_phi[i].sum()),
            "leave_one_out": float(mean_loo[i].sum()) if mean_loo is not None else None,
            "share_in_run": float(in_run_shares[i]),
            "share_retraining": float(retrain_shares[i]),
        }
        for i, p in enumerate(players)
    ]
    targets = []
    for j, target in enumerate(run.targets.ids):
        row: dict[str, Any] = {
            "target_id": target,
            "owner": run.targets.owners[j] or None,
            "in_run": {p: float(in_run[i, j]) for i, p in enumerate(players)},
            "retraining_shapley": {p: float(mean_phi[i, j]) for i, p in enumerate(players)},
            "retraining_shapley_by_seed": [{p: float(m[i, j]) for i, p in enumerate(players)} for m in raw],
            "leave_one_out": {p: float(mean_loo[i, j]) for i, p in enumerate(players)} if mean_loo is not None else None,
            "top_owner_in_run": players[int(np.argmax(in_run[:, j]))],
            "top_owner_retraining": players[int(np.argmax(mean_phi[:, j]))],
        }
        if seeds[min(seeds)]["stderr"] is not None:  # sampled: the estimate's standard error per seed
            row["stderr_by_seed"] = [
                {p: float(np.asarray(r["stderr"][p])[j]) for p in players} for _, r in sorted(seeds.items())
            ]
        targets.append(row)
    return owners, targets


def _checks(outcome: Outcome) -> dict[str, Any]:
    """Is the rebuilt base the run's? Does seed 0 on every owner walk the run's trajectory?"""
    run, k = outcome.run, len(outcome.run.targets)
    base = float(np.mean(outcome.base_losses[:k]))
    recorded = float(run.steps["target_loss_before"].iloc[0]) if len(run.steps) else None
    everyone = frozenset(run.train.owners)
    grand = outcome.records.get((everyone, 0))
    return {
        "base_target_loss": base,
        # only the exact estimator evaluates the same draws on every target each step
        "run_target_loss_before": recorded if run.config.estimator == "exact" else None,
        "base_matches_run": bool(abs(base - recorded) <= 1e-5 * max(1.0, abs(recorded)))
        if recorded is not None and run.config.estimator == "exact" else None,
        "grand_coalition_reproduces_run": (grand.weights_sha256 == run.manifest.get("weights_sha256"))
        if grand is not None else None,
    }


def _second_order(outcome: Outcome) -> dict[str, Any] | None:
    """Per target: do the summed values account for the run's actual target-loss change?

    The actual change is ℓ_T(base) − ℓ_T(final) on every owner with the run's own seed:
    the retraining on everyone, which is the run itself (checks.grand_coalition_reproduces_run).
    """
    run, k = outcome.run, len(outcome.run.targets)
    grand = outcome.records.get((frozenset(run.train.owners), 0))
    if grand is None:
        return None
    actual = outcome.base_losses[:k] - np.asarray(grand.losses)[:k]
    by_target = run.values.groupby("target_id", sort=False)[["value", "value_first_order"]].sum().reindex(list(run.targets.ids))

    def gap(column: str) -> dict[str, Any]:
        predicted = by_target[column].to_numpy(dtype=np.float64)
        return {
            "sum_mean": float(predicted.mean()),
            "mean_abs_gap": float(np.abs(predicted - actual).mean()),
            "relative_gap": float(np.abs(predicted - actual).mean() / np.abs(actual).mean()) if np.abs(actual).mean() else None,
        }

    doc: dict[str, Any] = {"actual_change_mean": float(actual.mean()), "first_order": gap("value_first_order")}
    if run.config.order == 2:
        doc["with_second_order"] = gap("value")
        first = np.abs(by_target["value_first_order"].to_numpy() - actual)
        both = np.abs(by_target["value"].to_numpy() - actual)
        doc["targets_closer_with_second_order"] = float(np.mean(both < first))
        doc["second_order_closes_gap"] = bool(doc["with_second_order"]["mean_abs_gap"] < doc["first_order"]["mean_abs_gap"])
    return doc


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 3) if values else None
