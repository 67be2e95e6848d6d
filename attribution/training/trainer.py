"""`royalty train` as a library: fine-tune, value every step, write the run folder.

Reads top to bottom: prepare (validate every input, before any training), then the
loop (one engine step per optimizer step), then the outputs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import pandas as pd
import torch

from royalty import __version__
from royalty.atomic import atomic_path, sha256_file, sha256_tree
from royalty.attribution.training import checkpoint
from royalty.attribution.contract import run_folder
from royalty.attribution.training.config import (
    DEFAULT_LORA_TARGETS,
    DEFAULT_TEXT_TO_IMAGE_LORA_RANK,
    REFERENCE_NONE,
    REFERENCE_TARGETS_MEAN,
    SHARE_ESTIMATORS,
    TrainConfig,
)
from royalty.attribution.data.folders import Duplicates, ImageTable, inputs_manifest, load_targets, load_training_data
from royalty.attribution.training.distributed import Dist, barrier, same_everywhere, shard_rows
from royalty.attribution.training.device import cpu_threads, resolve_device, use_cpu_threads, use_device
from royalty.attribution.model.diffusion import PixelDiffusion, build_default_unet, check_resolution, default_scheduler, load_model
from royalty.attribution.model.task import Inputs, Task
from royalty.attribution.model.text_to_image import is_text_to_image
from royalty.attribution.engine.gradient import TrainPass
from royalty.attribution.engine.step import EngineConfig, ValueEngine, plan_model
from royalty.attribution.engine.window import CreditWindow
from royalty.attribution.training.optim import optimization
from royalty.attribution.training.out_folder import check_out, forget_unsaved, start
from royalty.attribution.training.targets import TargetPlan
from royalty.attribution.training.values_table import ledger_totals, steps_frame, values_frame
from royalty.attribution.training.trajectory import ProgressFn, Parallel, Tally, Valued, valued_steps, warm_up, weights_sha256
from royalty.errors import TrainingError, UsageError


@dataclass(frozen=True)
class Prepared:
    config: TrainConfig
    train: ImageTable
    targets: ImageTable
    reference: ImageTable | None
    task: Task
    model_source: dict[str, Any]
    total_steps: int
    device: torch.device = torch.device("cpu")


def prepare(
    config: TrainConfig, resume: bool = False, force: bool = False, dist: Dist = Dist(), device: torch.device | None = None
) -> Prepared:
    """Every check that can fail, before anything is trained or written.

    Under a launcher every process runs these same checks on the same inputs, so a bad
    input fails on all of them alike; none writes anything before all have passed.
    `device`: where to compute, as `resolve_device(config.device, dist)` chose it.
    """
    device = device if device is not None else resolve_device(config.device, dist)
    shard_rows(dist, config.batch_size)
    task, source = initial_model(config, device)
    train = load_training_data(config.data, config.resolution, duplicates=Duplicates.for_training(config.allow_duplicates))
    targets = load_targets(config.targets, config.resolution)
    reference = None
    if config.reference not in (REFERENCE_TARGETS_MEAN, REFERENCE_NONE):
        reference = load_targets(Path(config.reference), config.resolution, what="reference")
    if config.estimator in SHARE_ESTIMATORS and config.target_subset > len(targets):
        raise UsageError(f"--target-subset {config.target_subset} exceeds the {len(targets)} targets")
    if config.values:
        plan_model(task.model)  # refuses a model with parameters no rule covers
    check_out(config, resume, force)
    return Prepared(config, train, targets, reference, task, source, config.total_steps(len(train)), device)


def initial_model(config: TrainConfig, device: torch.device | None = None) -> tuple[Task, dict[str, Any]]:
    """The task a run starts from (its model before warm-up, on `device`), and where the model came from.

    `device` defaults to the run's --device in one process: what replay and audit use.
    """
    if device is None:
        try:
            device = resolve_device(config.device)
        except UsageError as exc:
            raise UsageError(f"the run was trained with --device {config.device} and is rebuilt on the same: {exc}") from exc
        use_device(device)
    if config.model is not None and is_text_to_image(config.model):
        return _text_to_image(config, device)
    if config.lora_rank:
        raise UsageError("--lora-rank: LoRA is offered for text-to-image pipelines (--model DIR with a UNet2DConditionModel); a pixel UNet trains whole")
    if config.model is not None:
        unet, scheduler = load_model(config.model)
        check_resolution(unet, config.resolution)
        if unet.config.in_channels != 3 or unet.config.out_channels != 3:
            raise UsageError(f"{config.model}: royalty trains RGB models (3 input and output channels)")
        source = {"kind": "folder", "path": str(config.model), "sha256": sha256_tree(config.model)}
    else:
        unet = build_default_unet(config.resolution, seed=config.seed)
        scheduler = default_scheduler()
        source = {"kind": "default-tiny-unet"}
    freeze(unet, config.freeze)
    return PixelDiffusion(unet.to(device), scheduler), source


def _text_to_image(config: TrainConfig, device: torch.device) -> tuple[Task, dict[str, Any]]:
    """A Stable-Diffusion-layout pipeline: LoRA on its UNet (or the whole UNet), the rest frozen."""
    from royalty.attribution.model import text_to_image as t2i

    assert config.model is not None
    pipe = t2i.load_pipeline(config.model)
    task = t2i.TextToImage(pipe.unet, pipe, config.seed, config.caption_column, config.allow_empty_captions)
    t2i.check_latent_resolution(task, config.resolution)
    for frozen in (m for m in (pipe.vae, pipe.text_encoder) if m is not None):
        frozen.requires_grad_(False)
        frozen.eval().to(device)
    source: dict[str, Any] = {
        "kind": "text-to-image-pipeline", "path": str(config.model), "sha256": sha256_tree(config.model),
        "prediction_type": pipe.scheduler.config.prediction_type,
    }
    rank = config.lora_rank if config.lora_rank is not None else DEFAULT_TEXT_TO_IMAGE_LORA_RANK
    if rank > 0:
        lora = t2i.Lora(rank, config.lora_alpha or float(rank), config.lora_targets or DEFAULT_LORA_TARGETS)
        t2i.add_lora(pipe.unet, lora, config.seed)
        source["lora"] = lora.to_json()
    elif config.lora_alpha is not None or config.lora_targets is not None:
        raise UsageError("--lora-alpha and --lora-targets need --lora-rank above 0 (rank 0 trains the whole UNet)")
    freeze(pipe.unet, config.freeze)
    pipe.unet.to(device)
    return task, source


def freeze(model: torch.nn.Module, patterns: tuple[str, ...]) -> list[str]:
    """Fix the parameters whose names match any pattern; a pattern matching nothing is an error."""
    names = [n for n, _ in model.named_parameters()]
    for pattern in patterns:
        if not fnmatch.filter(names, pattern):
            raise UsageError(f"--freeze {pattern!r} matches no parameter of the model")
    frozen = [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]
    if patterns and len(frozen) == len(names):
        raise UsageError(f"--freeze {' '.join(patterns)} freezes every parameter of the model: nothing is left to train")
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return frozen


def train(
    prep: Prepared, resume: bool = False, force: bool = False, progress: ProgressFn | None = None, dist: Dist = Dist()
) -> dict[str, Any] | None:
    """Run the whole job; returns the summary document (None on processes other than rank 0).

    With several processes every one trains (its shard of each batch) and holds the
    whole tally; only rank 0 writes into the run folder, the others wait at barriers.
    """
    cfg, out = prep.config, prep.config.out
    started = time.monotonic()
    torch.manual_seed(cfg.seed)
    # every process has checked --out (prepare) before rank 0 changes anything in it
    barrier(dist)
    created = start(out, cfg, fresh=force or not resume) if dist.is_main else False
    barrier(dist)
    try:
        return _train_and_write(prep, resume, progress, dist, started)
    except Exception:
        # a refused model, a diverged or failed run: if it saved nothing (no checkpoint),
        # it leaves nothing that would stop the next command (Ctrl-C keeps it: --resume)
        if dist.is_main:
            forget_unsaved(out, created)
        raise


def _train_and_write(prep: Prepared, resume: bool, progress: ProgressFn | None, dist: Dist, started: float) -> dict[str, Any] | None:
    cfg, out = prep.config, prep.config.out
    task = prep.task
    unet = task.model
    unet.train()
    opt = optimization(cfg, unet)
    optimizer = opt.optimizer
    groups = target_groups(task, prep.targets, prep.reference)
    plan = TargetPlan(groups, len(prep.targets), cfg.timestep_draws, cfg.target_max_timestep, cfg.estimator, cfg.target_subset, cfg.seed)
    par = Parallel.of(cfg, dist)
    images, total = task.inputs(prep.train), prep.total_steps  # on the model's device
    engine = ValueEngine(unet, engine_config(cfg)) if cfg.values else None
    passes = engine.passes if engine is not None else TrainPass(unet, engine_config(cfg))
    valued = Valued(images, plan, passes, engine, opt.precondition, par)
    tally = Tally.zeros(len(prep.train), plan.n_columns)

    def save_checkpoint(step: int) -> None:
        if not dist.is_main:
            return  # every process holds the same state: rank 0 writes it
        state = {
            "step": step, "model": unet.state_dict(), "optimizer": optimizer.state_dict(),
            "first": tally.first, "second": tally.second, "log": tally.log, "cpu_threads": cpu_threads(),
        }
        if tally.window is not None:  # the batches still being credited through momentum
            state["window"] = tally.window.state()
        if dist.active:  # one-process checkpoints stay as they were
            state["world_size"] = dist.world
        checkpoint.save(out, step, state)

    start_step = 0  # valued steps already done
    state = checkpoint.load_latest(out) if resume else None
    if state is not None:
        _check_resume_world(state, dist)
        use_cpu_threads(state.get("cpu_threads"))  # the interrupted run's arithmetic
        unet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        window = CreditWindow.from_state(state["window"]) if state.get("window") is not None else None
        tally = Tally(state["first"], state["second"], state["log"], window)
        start_step = state["step"]
    else:
        warm_up(cfg, task, optimizer, images, progress, cfg.warmup_steps + total, passes, par)
        if cfg.checkpoint_every:
            save_checkpoint(0)  # the weights the valued phase starts from (attribute --mode checkpoints)

    def after_step(done: int) -> None:
        # the final weights are model/ itself: no checkpoint for them
        if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and done < total:
            save_checkpoint(done)
        if progress is not None:
            progress(cfg.warmup_steps + done, cfg.warmup_steps + total, tally.log[-1]["train_loss"])

    valued_steps(cfg, task, optimizer, valued, tally, range(start_step, total), after_step)
    digest = weights_sha256(unet)
    if not same_everywhere(dist, digest):
        # the all-reduced update is applied identically everywhere; if the weights still
        # differ, the processes did not train the same model and no value can be trusted
        raise TrainingError("the processes ended with different weights: no values were written")
    summary = None
    if dist.is_main:
        summary = _write_outputs(prep, tally, time.monotonic() - started, dist)
    barrier(dist)  # the job ends when the run folder is complete
    return summary


def target_groups(task: Task, targets: ImageTable, reference: ImageTable | None) -> tuple[Inputs, ...]:
    """Each target's inputs as one value column's group, then the reference set's, if any."""
    inputs = task.inputs(targets)
    groups = tuple(inputs[i : i + 1] for i in range(len(targets)))
    if reference is not None:
        groups += (task.inputs(reference),)
    return groups


def engine_config(cfg: TrainConfig) -> EngineConfig:
    # bf16 autocast rounds autograd's gradient (8-bit mantissa) that the engine's
    # first-step self-check compares its float32 per-sample sums with: allow for it
    return EngineConfig(order=cfg.order, self_check_rtol=3e-2 if cfg.mixed_precision == "bf16" else None)


def _check_resume_world(state: dict[str, Any], dist: Dist) -> None:
    recorded = int(state.get("world_size", 1))
    if recorded != dist.world:
        # values would be valid but not bit-identical to the uninterrupted run (another
        # gradient summation order): refuse rather than silently change the promise
        raise UsageError(f"--resume: the run was checkpointed on {recorded} process(es); resume it on {recorded}, not {dist.world}")


def _write_outputs(prep: Prepared, tally: Tally, seconds: float, dist: Dist = Dist()) -> dict[str, Any]:
    cfg, out = prep.config, prep.config.out
    first, second, log = tally.first, tally.second, tally.log
    prep.task.model.eval()
    # model/: written whole into a temporary folder, then renamed into place
    tmp_model = out / f".{run_folder.MODEL_DIR}.tmp"
    shutil.rmtree(tmp_model, ignore_errors=True)
    prep.task.save(tmp_model)
    shutil.rmtree(out / run_folder.MODEL_DIR, ignore_errors=True)
    tmp_model.rename(out / run_folder.MODEL_DIR)

    steps = steps_frame(log)
    with atomic_path(out / run_folder.STEPS) as tmp:
        steps.to_parquet(tmp, index=False)
    if cfg.values:
        with atomic_path(out / run_folder.VALUES) as tmp:
            _values(prep, first, second).to_parquet(tmp, index=False)

    outputs = run_folder.output_hashes(out)
    manifest = {
        "format_version": run_folder.FORMAT_VERSION,
        "run_id": _run_id(prep),
        "royalty_version": __version__,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "pandas": pd.__version__,
            "numpy": np.__version__,
        },
        "config": cfg.to_json(),
        "seed": cfg.seed,
        "world_size": dist.world,
        "cpu_threads": cpu_threads(),  # replay and audit compute with the same (device.py)
        "total_steps": prep.total_steps,
        "reference": _reference_kind(cfg),
        "model_source": prep.model_source,
        "frozen_parameters": sorted(n for n, p in prep.task.model.named_parameters() if not p.requires_grad),
        "inputs": {
            "train": inputs_manifest(prep.train),
            "targets": inputs_manifest(prep.targets),
            "reference": inputs_manifest(prep.reference) if prep.reference is not None else None,
        },
        "input_folders": {
            "train": str(Path(cfg.data).resolve()),
            "targets": str(Path(cfg.targets).resolve()),
            "reference": str(Path(cfg.reference).resolve()) if prep.reference is not None else None,
        },
        "outputs": outputs,
        "weights_sha256": weights_sha256(prep.task.model),
        "checkpoints": {f"{c.name}": sha256_file(c) for c in checkpoint.paths(out)},
        "seconds": round(seconds, 3),
    }
    if cfg.values:
        manifest["ledger"] = ledger_totals(steps, cfg, tally.window)
    run_folder.write_manifest(out, manifest)
    return {
        "format_version": run_folder.FORMAT_VERSION,
        "run_id": manifest["run_id"],
        "out": str(out),
        "steps": prep.total_steps,
        "train_images": len(prep.train),
        "owners": len(set(prep.train.owners)),
        "targets": len(prep.targets),
        "final_train_loss": log[-1]["train_loss"] if log else None,
        "values": cfg.values,
        "seconds": round(seconds, 3),
        "world_size": dist.world,
        "outputs": outputs,
    }


def _values(prep: Prepared, first: torch.Tensor, second: torch.Tensor) -> pd.DataFrame:
    k = len(prep.targets)
    total = first + second
    kind = _reference_kind(prep.config)
    # R's value per sample: the reference column, or the uniform mixture of the targets
    reference = total[:, k] if kind == "folder" else total[:, :k].mean(dim=1) if kind == REFERENCE_TARGETS_MEAN else None
    return values_frame(prep.train.ids, prep.train.owners, prep.targets.ids, first[:, :k], second[:, :k], reference)


def _reference_kind(cfg: TrainConfig) -> str:
    return cfg.reference if cfg.reference in (REFERENCE_TARGETS_MEAN, REFERENCE_NONE) else "folder"


def _run_id(prep: Prepared) -> str:
    h = hashlib.sha256(prep.config.recipe_hash().encode())
    for table in (prep.train, prep.targets):
        h.update("".join(table.sha256).encode())
    return h.hexdigest()[:16]
