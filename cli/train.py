"""`royalty train`: parse options, call the trainer, print the summary JSON on stdout."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import typer

from royalty.attribution.training.config import FINE_TUNE, FROM_SCRATCH, Recipe, TrainConfig, mixed_precision_of, recipe_options
from royalty.cli.app import app
from royalty.cli.console import make_console, print_error, write_stdout
from royalty.cli.errors import EXIT_INTERRUPTED
from royalty.cli.help import examples
from royalty.cli.options import TrainDeviceOption, QuietOption
from royalty.cli.progress import step_progress
from royalty.errors import RoyaltyError, TrainingError

# Every default is TrainConfig's: the command and the library cannot disagree.
DEFAULT = TrainConfig(data=Path(), targets=Path(), out=Path())


@app.command(
    "train",
    epilog=examples(
        "royalty train sample_data/train --targets sample_data/targets --out runs/sample --steps 50",
        "royalty train sample_data/train --targets sample_data/targets --out runs/sample --force --warmup-steps 100 "
        "--warmup-lr 0.001 --optimizer adamw --steps 50 --lr 0.0002 --timestep-draws 2 --target-max-timestep 100",
    ),
)
def train_command(
    data: Path = typer.Argument(..., help="Training folder: images + metadata.csv/jsonl with file_name and owner."),
    targets: Path = typer.Option(..., "--targets", help="Target images whose revenue is split (metadata optional)."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (model/, values.parquet, steps.parquet, run.json)."),
    model: Path = typer.Option(None, "--model", help="Local diffusers folder to fine-tune: a text-to-image pipeline (Stable Diffusion layout), a DDPMPipeline or a UNet2DModel; default: a tiny pixel UNet built from code."),
    caption_column: str = typer.Option(None, "--caption-column", metavar="COLUMN", help="Text-to-image: the metadata column of the captions (default: text, else caption). Targets' captions are their prompts.", show_default=False),
    allow_empty_captions: bool = typer.Option(False, "--allow-empty-captions", help="Text-to-image: train images with an empty caption unconditioned instead of refusing them."),
    lora_rank: int = typer.Option(None, "--lora-rank", metavar="R", help="Text-to-image: LoRA rank of the UNet's adapters; 0 fine-tunes the whole UNet. Default: 4.", show_default=False),
    lora_alpha: float = typer.Option(None, "--lora-alpha", help="LoRA alpha (scale alpha/R). Default: R.", show_default=False),
    lora_targets: list[str] = typer.Option([], "--lora-targets", metavar="NAME", help="Module names that get adapters (repeatable). Default: to_k, to_q, to_v, to_out.0 (the attention projections).", show_default=False),
    resolution: int = typer.Option(DEFAULT.resolution, "--resolution", help="Image side in pixels."),
    steps: int = typer.Option(None, "--steps", help=f"Optimizer steps. Default: 1 epoch from scratch, {FINE_TUNE.epochs:g} epochs for a text-to-image base.", show_default=False),
    epochs: float = typer.Option(None, "--epochs", help="Passes over the training data (instead of --steps)."),
    batch_size: int = typer.Option(DEFAULT.batch_size, "--batch-size", help="Training images per step."),
    lr: float = typer.Option(None, "--lr", help=f"Learning rate. Default: {FROM_SCRATCH.lr:g} from scratch, {FINE_TUNE.lr:g} for a text-to-image base.", show_default=False),
    optimizer: str = typer.Option(None, "--optimizer", help=f"sgd or adamw. Default: {FROM_SCRATCH.optimizer} from scratch, {FINE_TUNE.optimizer} for a text-to-image base.", show_default=False),
    weight_decay: float = typer.Option(DEFAULT.weight_decay, "--weight-decay", help="Weight decay (its effect is reported as unattributed, never paid to an image)."),
    credit: str = typer.Option(DEFAULT.credit, "--credit", help="applied: credit the update the optimizer applies (AdamW's momentum spread over the batches in it); own-step: each batch's preconditioned gradient at its own step. Same for plain SGD."),
    credit_window: int = typer.Option(None, "--credit-window", metavar="STEPS", help="With --credit applied: steps a batch stays credited through momentum (default: until β1^STEPS ≤ 1e-4, 88 for AdamW's 0.9); older momentum is reported as unattributed.", show_default=False),
    order: int = typer.Option(None, "--order", help=f"1: first-order values; 2: adds the curvature term. Default: {FROM_SCRATCH.order} from scratch, {FINE_TUNE.order} for a text-to-image base.", show_default=False),
    curvature: str = typer.Option(None, "--curvature", help=f"With --order 2: hessian (one Hessian-vector product per target per step) or secant (the change of the targets' gradients across the step: about first order's cost). Default: {FROM_SCRATCH.curvature} from scratch, {FINE_TUNE.curvature} for a text-to-image base.", show_default=False),
    timestep_draws: int = typer.Option(None, "--timestep-draws", help=f"Fixed (timestep, noise) draws per target image (M). Default: {FROM_SCRATCH.timestep_draws} from scratch, {FINE_TUNE.timestep_draws} for a text-to-image base.", show_default=False),
    target_max_timestep: int = typer.Option(None, "--target-max-timestep", help=f"Target draws use timesteps below this (low noise is more faithful). Default: {FROM_SCRATCH.target_max_timestep} from scratch, {FINE_TUNE.target_max_timestep} for a text-to-image base.", show_default=False),
    train_max_timestep: int = typer.Option(None, "--train-max-timestep", help="Valued steps draw training timesteps below this (default: all; the warm-up always uses all).", show_default=False),
    estimator: str = typer.Option(DEFAULT.estimator, "--estimator", help="Target side: exact (fixed draws), fresh (one new draw per step), subset (S random targets per step) or rotation (S per step, every target once per ⌈K/S⌉ steps)."),
    target_subset: int = typer.Option(DEFAULT.target_subset, "--target-subset", help="Targets evaluated per step with --estimator subset or rotation."),
    reference: str = typer.Option(DEFAULT.reference, "--reference", help="Contrast set for value_specific: a folder of generic images, 'targets-mean' or 'none'."),
    warmup_steps: int = typer.Option(DEFAULT.warmup_steps, "--warmup-steps", help="Plain (unattributed) steps on the pooled data before the valued phase."),
    warmup_lr: float = typer.Option(None, "--warmup-lr", help="Learning rate of the warm-up (default: --lr)."),
    freeze: list[str] = typer.Option([], "--freeze", metavar="PATTERN", help="Keep parameters matching this pattern fixed (fnmatch, repeatable), e.g. 'time_embedding.*'."),
    seed: int = typer.Option(DEFAULT.seed, "--seed", help="Seed of everything random in the run."),
    no_values: bool = typer.Option(False, "--no-values", help="Plain training, no values (the overhead baseline)."),
    allow_duplicates: bool = typer.Option(False, "--allow-duplicates", help="Train on an image its owner lists more than once (same file or byte-identical copy); recorded in run.json. One image under two owners is always refused."),
    checkpoint_every: int = typer.Option(DEFAULT.checkpoint_every, "--checkpoint-every", help="Save a resumable checkpoint every N steps (0: never)."),
    gradient_accumulation_steps: int = typer.Option(DEFAULT.gradient_accumulation_steps, "--gradient-accumulation-steps", help="Micro-batches of --batch-size rows per optimizer step; values use the step's whole batch."),
    device: str = TrainDeviceOption,
    mixed_precision: str = typer.Option(None, "--mixed-precision", help="no, or bf16: autocast of the training forward (values still in float32/64). Default: no, or accelerate launch's --mixed_precision.", show_default=False),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    force: bool = typer.Option(False, "--force", help="Replace the run in --out."),
    quiet: bool = QuietOption,
) -> None:
    """Fine-tune a diffusion model on owner-tagged images and value every image for every target."""
    recipe = recipe_options(
        recipe_for(model), credit, steps=steps, epochs=epochs, lr=lr, optimizer=optimizer, timestep_draws=timestep_draws,
        target_max_timestep=target_max_timestep, order=order, curvature=curvature,
    )
    config = TrainConfig(
        data=data, targets=targets, out=out, model=model, resolution=resolution, **recipe,
        batch_size=batch_size, weight_decay=weight_decay, train_max_timestep=train_max_timestep, estimator=estimator,
        target_subset=target_subset, reference=reference, seed=seed, values=not no_values,
        checkpoint_every=checkpoint_every, warmup_steps=warmup_steps, warmup_lr=warmup_lr, freeze=tuple(freeze),
        gradient_accumulation_steps=gradient_accumulation_steps, mixed_precision=mixed_precision_of(mixed_precision),
        device=device, allow_duplicates=allow_duplicates, caption_column=caption_column,
        allow_empty_captions=allow_empty_captions, lora_rank=lora_rank, lora_alpha=lora_alpha,
        lora_targets=tuple(lora_targets) or None, credit=credit, credit_window=credit_window,
    )
    # torch and diffusers load here, not at start-up: other commands stay fast
    from royalty.attribution.training.device import resolve_device, use_device
    from royalty.attribution.training.distributed import from_env, launched

    target = resolve_device(config.device, from_env())
    use_device(target)  # before the process group: NCCL binds to the current GPU
    with launched(target) as dist:
        with _on_rank(dist):
            _train(config, resume, force, quiet or not dist.is_main, dist, target)


def recipe_for(model: Path | None) -> Recipe:
    """The fine-tune recipe for a text-to-image base, the from-scratch one otherwise."""
    if model is None:
        return FROM_SCRATCH
    from royalty.attribution.model.text_to_image import is_text_to_image  # imports torch

    return FINE_TUNE if is_text_to_image(model) else FROM_SCRATCH


def _train(config, resume: bool, force: bool, quiet: bool, dist, device) -> None:
    from royalty.attribution.training.trainer import prepare

    started = False  # prepare() writes nothing; train() makes --out the run's first
    try:
        prep = prepare(config, resume=resume, force=force, dist=dist, device=device)
        started = True
        _run(prep, config, resume, force, quiet, dist, device)
    except KeyboardInterrupt:
        if dist.is_main:
            print_error(_interrupted(config.out) if started else "interrupted before training started: nothing was written")
        raise typer.Exit(EXIT_INTERRUPTED) from None


def _interrupted(out: Path) -> str:
    """Ctrl-C: what the folder holds now, and the command that continues the run."""
    from royalty.attribution.training.out_folder import held_run

    held = held_run(out)
    if held is None:
        return "interrupted before training started: nothing was written"
    if held.finished:
        return f"interrupted after the run in {out} was complete: nothing to continue"
    where = f"{held.progress}: it continues from there" if held.checkpoints else "it saved no checkpoint yet: it starts over"
    return f"interrupted: the run in {out} is unfinished; to continue, run the same command with --resume ({where})"


def _run(prep, config, resume: bool, force: bool, quiet: bool, dist, device) -> None:
    from royalty.attribution.training.trainer import train

    console = make_console(quiet)  # only rank 0 shows progress
    processes = f" on {dist.world} processes" if dist.active else ""
    processes += f" on {device}" if device.type != "cpu" else ""
    console.print(
        f"training on {len(prep.train)} images from {len(set(prep.train.owners))} owners, "
        f"{len(prep.targets)} targets, {config.warmup_steps} warm-up + {prep.total_steps} valued steps{processes}", highlight=False
    )
    with step_progress(console, "train", config.warmup_steps + prep.total_steps, quiet) as progress:
        summary = train(prep, resume=resume, force=force, progress=progress, dist=dist)
    if summary is not None:  # rank 0: the one machine document
        write_stdout(json.dumps(summary, indent=2, sort_keys=True))


@contextlib.contextmanager
def _on_rank(dist) -> Iterator[None]:
    """Under a launcher, say which process an error comes from.

    A process that fails exits at once (the launcher then stops the others); a process
    whose peer died sees its collective fail, and says that instead of a bare traceback.
    """
    if not dist.active:
        yield
        return
    import torch.distributed as torch_dist

    try:
        yield
    except RoyaltyError as exc:
        raise type(exc)(f"process {dist.rank} of {dist.world}: {exc}") from exc
    except (torch_dist.DistError, RuntimeError) as exc:
        # gloo reports a dead peer as a bare RuntimeError from its transport
        if not isinstance(exc, torch_dist.DistError) and "gloo" not in str(exc) and "NCCL" not in str(exc):
            raise
        raise TrainingError(
            f"process {dist.rank} of {dist.world} lost the other processes ({type(exc).__name__}: {exc}); "
            "another process probably failed: its message comes first"
        ) from exc
