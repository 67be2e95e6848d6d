"""`royalty attribute --mode replay`: walk the recorded trajectory again with new targets.

Same initial model, warm-up, batches, timestep/noise draws and optimizer as the run
(all derived from its seed), with the engine valuing the new targets at every step.
The engine's training pass is plain training's backward, so the replayed weights must
equal the recorded ones bit for bit; if they do not, the values would describe some
other training run, and the replay refuses them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from royalty.attribution.data.folders import ImageTable
from royalty.attribution.training.device import use_cpu_threads
from royalty.attribution.engine.step import ValueEngine
from royalty.attribution.training.optim import optimization
from royalty.attribution.after.recorded import Recorded
from royalty.attribution.training.targets import TargetPlan
from royalty.attribution.model.task import Task
from royalty.attribution.training.trainer import engine_config, initial_model, target_groups
from royalty.attribution.training.trajectory import Parallel, ProgressFn, Tally, Valued, valued_steps, warm_up, weights_sha256
from royalty.errors import DataError


@dataclass(frozen=True)
class Attributed:
    first: torch.Tensor  # [n_train, K]
    second: torch.Tensor  # [n_train, K]
    log: list[dict[str, float]]  # one row per step (empty when the mode has no per-step trace)
    weights_sha256: str | None  # the weights the replay ended at (None: not a replay)


def target_plan(task: Task, targets: ImageTable, cfg, estimator: str, subset: int) -> TargetPlan:
    """The new targets take columns 0..K-1: the draws `royalty train --targets` would use."""
    groups = target_groups(task, targets, None)
    return TargetPlan(groups, len(targets), cfg.timestep_draws, cfg.target_max_timestep, estimator, subset, cfg.seed)


def replay(recorded: Recorded, targets: ImageTable, progress: ProgressFn | None = None) -> Attributed:
    cfg = recorded.config
    use_cpu_threads(recorded.manifest.get("cpu_threads"))
    torch.manual_seed(cfg.seed)  # as `royalty train` does
    task, _ = initial_model(cfg)
    unet = task.model
    unet.train()
    opt = optimization(cfg, unet)
    optimizer = opt.optimizer
    plan = target_plan(task, targets, cfg, cfg.estimator, cfg.target_subset)
    # one process, the run's micro-batches and precision: a run trained on several
    # processes summed its gradients in another order and is refused by the hash check
    par = Parallel.of(cfg)
    total = int(recorded.manifest["total_steps"])
    images = task.inputs(recorded.train)
    engine = ValueEngine(unet, engine_config(cfg))
    valued = Valued(images, plan, engine.passes, engine, opt.precondition, par)
    warm_up(cfg, task, optimizer, images, progress, cfg.warmup_steps + total, engine.passes, par)
    tally = Tally.zeros(len(recorded.train), plan.n_columns)

    def after_step(done: int) -> None:
        if progress is not None:
            progress(cfg.warmup_steps + done, cfg.warmup_steps + total, tally.log[-1]["train_loss"])

    valued_steps(cfg, task, optimizer, valued, tally, range(total), after_step)
    digest = weights_sha256(unet)
    recorded_digest = recorded.manifest.get("weights_sha256")
    if digest != recorded_digest:
        raise DataError(_mismatch(recorded, digest, recorded_digest))
    return Attributed(tally.first, tally.second, tally.log, digest)


def _mismatch(recorded: Recorded, digest: str, expected: str | None) -> str:
    versions = recorded.manifest.get("versions", {})
    here = {"torch": torch.__version__}
    hint = ""
    if versions.get("torch") != here["torch"]:
        hint = f" (the run used torch {versions.get('torch')}, this is torch {here['torch']})"
    elif recorded.manifest.get("cpu_threads") is None:
        hint = (
            " (the run predates recording its CPU thread count: if it trained with another"
            " OMP_NUM_THREADS than this replay, set the same)"
        )
    elif recorded.config.device != "cpu":
        hint = f" (the run computed on {recorded.config.device}: replay on the same kind of GPU and CUDA)"
    return (
        f"replaying {recorded.run_dir} did not reproduce its final weights (sha256 {digest[:12]}…, recorded "
        f"{str(expected)[:12]}…): the run's recipe, inputs or environment changed{hint}; its values for new "
        "targets would describe another training run, so none were written"
    )
