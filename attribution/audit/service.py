"""`royalty audit` as a library: check a run's in-run values against retraining.

The game (one per target, all from the same retrainings): players are owners; the
utility of a coalition S for target k is ℓ_T(base, x_k) − ℓ_T(w_S, x_k), where base is the
run's model after warm-up and w_S is the base trained through the run's valued phase on
S's images only (`audit_retrain`). The empty coalition is worth 0 and costs nothing.
Shapley values are exact over all 2^n coalitions for n ≤ 6 players, permutation-sampled
beyond; leave-one-out comes with them. Each retraining is stored as it finishes
(`audit_state`), so an interrupted audit resumes where it stopped.

`--game batch-mask` changes only how a coalition trains (see `audit_retrain`): on the
run's own batches with the other owners' rows dropped, instead of on batches drawn from
its images alone. It is the game the in-run values approximate step by step; `subset`
(the default) is the one a retraining from scratch on fewer owners would play.

`--owners N` audits the N owners with the most images; the others are *background*:
they stay in every coalition, so an audited owner's utility is measured with everyone
else present, as in the run (v(S) = U(S ∪ O) − U(O); leave-one-out is then exactly the
full game's). Dropping them instead would audit a different, smaller training set.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from royalty import __version__
from royalty.attribution.contract import run_folder
from royalty.attribution.audit.state import GAMES, CoalitionStore, Retraining
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.after.recorded import check_inputs, open_recorded
from royalty.attribution.data.folders import ImageTable, load_targets
from royalty.attribution.audit.shapley import (
    EXACT_MAX_PLAYERS,
    all_coalitions,
    exact_shapley,
    leave_one_out,
    permutation_coalitions,
    permutation_shapley,
    sample_permutations,
)
from royalty.errors import DataError, UsageError

FORMAT_VERSION = 1
GAME_VERSION = 1  # bump when the retraining game changes: cached retrainings become stale

# fields of the recipe that do not change what a retraining computes (values, outputs, paths
# of inputs whose content the fingerprint hashes anyway)
_NOT_IN_GAME = ("out", "data", "targets", "order", "curvature", "values", "checkpoint_every", "estimator", "target_subset", "reference")


@dataclass(frozen=True)
class AuditConfig:
    run: Path
    owners: int | None = None  # audit the N owners with the most images; None: all
    seeds: int = 2  # retraining seeds: seed 0 is the run's own draws, the others the noise floor
    budget_minutes: float | None = None  # stop starting retrainings after this long; resume later
    permutations: int = 10  # player orders sampled when there are more than 6 players
    permutation_seed: int = 0
    game: str = "subset"  # "subset" | "batch-mask": how a coalition's retraining is trained

    def __post_init__(self) -> None:
        if self.owners is not None and self.owners < 1:
            raise UsageError(f"--owners must be 'all' or at least 1, got {self.owners}")
        if self.seeds < 1:
            raise UsageError(f"--seeds must be at least 1, got {self.seeds}")
        if self.budget_minutes is not None and not self.budget_minutes > 0:
            raise UsageError(f"--budget must be a positive number of minutes, got {self.budget_minutes}")
        if self.permutations < 1:
            raise UsageError(f"--permutations must be at least 1, got {self.permutations}")
        if self.game not in GAMES:
            raise UsageError(f"--game must be one of {', '.join(GAMES)}, got {self.game!r}")


@dataclass(frozen=True, eq=False)
class AuditedRun:
    """A finished run, verified: its recipe, inputs (checked against run.json) and tables."""

    dir: Path
    manifest: dict[str, Any]
    config: TrainConfig
    train: ImageTable
    targets: ImageTable
    reference: ImageTable | None
    values: pd.DataFrame
    steps: pd.DataFrame
    total_steps: int


def load_run(run_dir: Path) -> AuditedRun:
    """The run as `royalty attribute` opens it (model folder, training images and starting
    model checked against run.json), plus its values, steps, targets and reference, verified."""
    manifest = run_folder.read_manifest(run_dir)
    if not TrainConfig.from_json(manifest["config"]).values:
        raise DataError(f"{run_dir} was trained with --no-values: it has no values to audit")
    recorded = open_recorded(run_dir, values_for="audit")
    if recorded.opened.steps_path is None:
        raise DataError(f"{run_dir / run_folder.MANIFEST} records no {run_folder.STEPS}: the run has no trace to audit")
    config = recorded.config
    folders = manifest.get("input_folders") or {}
    targets = load_targets(Path(folders.get("targets") or config.targets), config.resolution)
    check_inputs(targets, manifest["inputs"]["targets"], "targets")
    reference = None
    if manifest.get("inputs", {}).get("reference"):
        reference = load_targets(Path(folders.get("reference") or config.reference), config.resolution, what="reference")
        check_inputs(reference, manifest["inputs"]["reference"], "reference")
    values = pd.read_parquet(recorded.opened.values_path)
    steps = pd.read_parquet(recorded.opened.steps_path)
    return AuditedRun(
        Path(run_dir), manifest, config, recorded.train, targets, reference, values, steps, int(manifest["total_steps"])
    )


def fingerprint(run: AuditedRun) -> str:
    """What decides a retraining's result: recipe, inputs, model, versions."""
    import torch

    recipe = {k: v for k, v in run.manifest["config"].items() if k not in _NOT_IN_GAME}
    doc = {
        "game": GAME_VERSION, "recipe": recipe, "inputs": run.manifest["inputs"],
        "model_source": run.manifest.get("model_source"), "total_steps": run.total_steps,
        "royalty": __version__, "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class GamePlan:
    players: tuple[str, ...]
    background: frozenset[str]
    seeds: int
    permutations: tuple[tuple[str, ...], ...]  # empty: exact Shapley
    game: str = "subset"

    @property
    def method(self) -> str:
        return "permutation" if self.permutations else "exact"

    def trained_on(self, coalition: frozenset) -> frozenset[str]:
        return frozenset(coalition) | self.background

    def work(self) -> list[tuple[frozenset[str], int]]:
        """Every (owners trained on, seed) the game needs, in the order to train them."""
        if not self.permutations:
            per_seed = [[c for c in all_coalitions(self.players)] for _ in range(self.seeds)]
            order = [(c, s) for s in range(self.seeds) for c in per_seed[s]]
        else:
            grand = frozenset(self.players)
            order = [(c, s) for s in range(self.seeds) for c in [frozenset(), grand, *(grand - {p} for p in self.players)]]
            order += [(c, s) for perm in self.permutations for s in range(self.seeds) for c in permutation_coalitions(perm)]
        seen, out = set(), []
        for coalition, s in order:
            key = (self.trained_on(coalition), s)
            if key[0] and key not in seen:  # training on nobody is the base: free
                seen.add(key)
                out.append(key)
        return out


def plan_game(run: AuditedRun, config: AuditConfig) -> GamePlan:
    counts = Counter(run.train.owners)
    ranked = sorted(counts, key=lambda o: (-counts[o], o))
    chosen = ranked if config.owners is None else ranked[: config.owners]
    players = tuple(sorted(chosen))
    background = frozenset(ranked) - frozenset(players)
    perms: tuple[tuple[str, ...], ...] = ()
    if len(players) > EXACT_MAX_PLAYERS:
        perms = tuple(sample_permutations(players, config.permutations, config.permutation_seed))
    return GamePlan(players, background, config.seeds, perms, config.game)


@dataclass(frozen=True)
class AuditHooks:
    """Progress callbacks for the CLI; all optional."""

    on_start: Callable[[int, int], None] | None = None  # (retrainings to run, already stored)
    on_phase: Callable[[str, int], None] | None = None  # (label, steps): a warm-up or retraining starts
    on_step: Callable[[int], None] | None = None  # steps done in the current phase
    on_retrained: Callable[[Retraining], None] | None = None


@dataclass
class Outcome:
    """What the retrainings produced; `audit_report` turns it into the document."""

    run: AuditedRun
    plan: GamePlan
    base_losses: np.ndarray
    records: dict
    seconds: float
    base_seconds: float
    trained_now: int
    stored_before: int
    stopped_by_budget: bool
    notes: list[str] = field(default_factory=list)


def run_audit(config: AuditConfig, hooks: AuditHooks = AuditHooks()) -> dict[str, Any]:
    from royalty.attribution.audit.document import build_report
    from royalty.attribution.audit.retrain import Phases, Retrainer, target_plan
    from royalty.attribution.training.device import use_cpu_threads

    started = time.monotonic()
    deadline = started + config.budget_minutes * 60 if config.budget_minutes is not None else None
    run = load_run(config.run)
    use_cpu_threads(run.manifest.get("cpu_threads"))  # retrain with the run's arithmetic
    plan = plan_game(run, config)
    store = CoalitionStore(run.dir, fingerprint(run), config.game)
    notes = []
    if store.stale:
        notes.append(f"ignored {store.stale} stored retraining(s) of another recipe or royalty version")
    work = plan.work()
    todo = [key for key in work if store.get(key) is None]
    if hooks.on_start is not None:
        hooks.on_start(len(todo), len(work) - len(todo))
    retrainer = Retrainer(run.config, run.train, lambda task: target_plan(run.config, task, run.targets, run.reference),
                          run.total_steps, store, Phases(hooks.on_phase, hooks.on_step), config.game)
    trained, stopped = 0, False
    for owners, seed in todo:
        if deadline is not None and time.monotonic() >= deadline:
            stopped = True
            notes.append(f"--budget spent after {trained} retraining(s); {len(todo) - trained} left: run again to resume")
            break
        label = f"seed {seed}: {'+'.join(sorted(owners))}"
        record = retrainer.retrain(owners, seed, label)
        store.add(record)
        trained += 1
        if hooks.on_retrained is not None:
            hooks.on_retrained(record)
    outcome = Outcome(run, plan, retrainer.base_losses, dict(store.records), time.monotonic() - started,
                      retrainer.base_seconds, trained, len(work) - len(todo), stopped, notes)
    return build_report(outcome)


def shapley_by_seed(plan: GamePlan, base: np.ndarray, records: dict) -> dict[int, dict[str, Any]]:
    """Per seed whose retrainings are all there (or, sampled, at least one order): the values."""
    out: dict[int, dict[str, Any]] = {}
    for s in range(plan.seeds):
        def loss(owners: frozenset[str]) -> np.ndarray | None:
            if not owners:
                return base
            record = records.get((owners, s))
            return None if record is None else np.asarray(record.losses)

        rest = loss(plan.trained_on(frozenset()))

        def utility(coalition: frozenset) -> np.ndarray | None:
            after = loss(plan.trained_on(coalition))
            return None if after is None or rest is None else rest - after

        if not plan.permutations:
            table = {c: utility(c) for c in all_coalitions(plan.players)}
            if any(v is None for v in table.values()):
                continue
            out[s] = {"shapley": exact_shapley(plan.players, table), "loo": leave_one_out(plan.players, table),
                      "stderr": None, "permutations": None}
            continue
        done = []
        for perm in plan.permutations:  # the leading orders whose retrainings are all stored
            if any(utility(c) is None for c in permutation_coalitions(perm)):
                break
            done.append(perm)
        if not done:
            continue
        estimate = permutation_shapley(plan.players, done, utility)
        grand = frozenset(plan.players)
        loo_table = {c: utility(c) for c in [grand, *(grand - {p} for p in plan.players)]}
        loo = leave_one_out(plan.players, loo_table) if all(v is not None for v in loo_table.values()) else None
        out[s] = {"shapley": estimate.values, "loo": loo, "stderr": estimate.stderr, "permutations": len(done)}
    return out
