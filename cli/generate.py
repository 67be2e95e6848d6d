"""`royalty generate`: sample images with a run's model, each with an id for sales."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from royalty.cli.app import app
from royalty.cli.console import make_console, write_stdout
from royalty.cli.help import examples
from royalty.cli.options import GenerateDeviceOption, QuietOption
from royalty.cli.progress import step_progress


class Scheduler(str, Enum):
    ddim = "ddim"
    ddpm = "ddpm"


@app.command("generate", epilog=examples("royalty generate runs/sample --num 64 --out runs/sample-gen"))
def generate_command(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train` (its model/ is verified first)."),
    num: int = typer.Option(..., "--num", help="Number of images."),
    out: Path = typer.Option(..., "--out", help="Folder to write: PNGs + metadata.csv (target_id, seed, scheduler, steps)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first image; image i uses seed + i."),
    steps: int = typer.Option(50, "--steps", help="Denoising steps."),
    scheduler: Scheduler = typer.Option(Scheduler.ddim, "--scheduler", help="ddim (deterministic, fast) or ddpm (the training scheduler)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass."),
    force: bool = typer.Option(False, "--force", help="Replace the images of an earlier `royalty generate` in --out."),
    device: str = GenerateDeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """Sample images with the run's fine-tuned model; the folder is ready for `royalty attribute`."""
    from royalty.attribution.after.generate import GenerateConfig, generate

    config = GenerateConfig(run=run, out=out, num=num, seed=seed, steps=steps, scheduler=scheduler.value, batch_size=batch_size, force=force, device=device)
    console = make_console(quiet)
    with step_progress(console, "generate", num, quiet) as progress:
        summary = generate(config, progress)
    write_stdout(json.dumps(summary, indent=2, sort_keys=True))
