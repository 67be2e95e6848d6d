"""`royalty attribute`: value the run's training images for images sold after training."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path

import typer

from royalty.cli.app import app
from royalty.cli.console import make_console, write_stdout
from royalty.cli.help import examples
from royalty.cli.options import QuietOption
from royalty.cli.progress import step_progress


class Mode(str, Enum):
    replay = "replay"
    checkpoints = "checkpoints"


@app.command(
    "attribute",
    epilog=examples(
        "royalty attribute runs/sample runs/sample-gen --name gen",
        "royalty attribute runs/sample runs/sample-gen --name gen-fast --mode checkpoints",
    ),
)
def attribute_command(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train`."),
    images: Path = typer.Argument(..., help="Folder of new target images (metadata optional, e.g. `royalty generate`'s output)."),
    mode: Mode = typer.Option(
        Mode.replay, "--mode",
        help="replay: exact, re-runs the recorded training with the new targets and checks the final weights hash; "
        "checkpoints: fast, first order at the checkpoints of `train --checkpoint-every K`.",
    ),
    name: str = typer.Option(None, "--name", help="Name of the attribution inside RUN/attributions/ (default: the folder's name)."),
    force: bool = typer.Option(False, "--force", help="Replace an attribution of the same name."),
    quiet: bool = QuietOption,
) -> None:
    """Value every training image for new target images, next to the run's own values.

    Writes RUN/attributions/NAME/ (values.parquet with the run's columns, attribution.json);
    `royalty payout RUN --attribution NAME` pays for the new images.
    """
    from royalty.attribution.after.attribute import AttributeConfig, attribute

    config = AttributeConfig(run=run, images=images, mode=mode.value, name=name, force=force)
    console = make_console(quiet)
    console.print(f"attributing {images} to the training images of {run} ({mode.value})", highlight=False)
    with step_progress(console, mode.value, 1, quiet) as progress:
        summary = attribute(config, progress)
    write_stdout(json.dumps(summary, indent=2, sort_keys=True))
