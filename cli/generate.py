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
from royalty.errors import DataError, InputMissingError


class Scheduler(str, Enum):
    ddim = "ddim"
    ddpm = "ddpm"


@app.command(
    "generate",
    epilog=examples(
        "royalty generate runs/sample --num 64 --out runs/sample-gen",
        "royalty generate runs/t2i --prompt 'a red heart' --prompt 'a cactus' --num 4 --out runs/t2i-gen",
    ),
)
def generate_command(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train` (its model/ is verified first)."),
    num: int = typer.Option(..., "--num", help="Number of images (per prompt, for a text-to-image run)."),
    prompt: list[str] = typer.Option([], "--prompt", metavar="TEXT", help="Text-to-image runs: a prompt (repeatable); written to the run's caption column."),
    prompts: Path = typer.Option(None, "--prompts", metavar="FILE", help="Text-to-image runs: a UTF-8 file of prompts, one per line (blank lines skipped), after any --prompt.", show_default=False),
    guidance_scale: float = typer.Option(1.0, "--guidance-scale", help="Text-to-image: classifier-free guidance scale; 1 = none, the image is drawn from its prompt alone."),
    out: Path = typer.Option(..., "--out", help="Folder to write: PNGs + metadata.csv (target_id, seed, scheduler, steps)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first image; image i uses seed + i."),
    steps: int = typer.Option(50, "--steps", help="Denoising steps."),
    scheduler: Scheduler = typer.Option(Scheduler.ddim, "--scheduler", help="ddim (deterministic, fast) or ddpm (the training scheduler)."),
    batch_size: int = typer.Option(16, "--batch-size", help="Images per forward pass."),
    force: bool = typer.Option(False, "--force", help="Replace the images of an earlier `royalty generate` in --out."),
    device: str = GenerateDeviceOption,
    quiet: bool = QuietOption,
) -> None:
    """Sample images with the run's fine-tuned model; the folder is ready for `royalty attribute`.

    A text-to-image run draws --num images per prompt, each with its prompt in metadata.csv.
    """
    from royalty.attribution.after.generate import GenerateConfig, generate

    config = GenerateConfig(
        run=run, out=out, num=num, seed=seed, steps=steps, scheduler=scheduler.value, batch_size=batch_size, force=force,
        device=device, prompts=tuple(prompt) + _read_prompts(prompts), guidance_scale=guidance_scale,
    )
    console = make_console(quiet)
    with step_progress(console, "generate", num, quiet) as progress:
        summary = generate(config, progress)
    write_stdout(json.dumps(summary, indent=2, sort_keys=True))


def _read_prompts(path: Path | None) -> tuple[str, ...]:
    if path is None:
        return ()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputMissingError(f"--prompts {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"--prompts {path} cannot be read as UTF-8 text: {exc}") from exc
    found = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not found:
        raise DataError(f"--prompts {path} holds no prompt")
    return found
