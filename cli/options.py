"""Options shared by several commands, defined once."""

from __future__ import annotations

import typer

QuietOption = typer.Option(False, "--quiet", "-q", help="Silence progress, tables and warnings on stderr.")

OutputOption = typer.Option(
    None,
    "--output",
    "-o",
    help="Write the document to FILE (atomically: complete or not at all) instead of stdout; "
    "stdout then stays empty.",
)

TrainDeviceOption = typer.Option(
    "cpu",
    "--device",
    help="Where to compute: cpu, cuda or cuda:N (under torchrun/accelerate launch: cuda is each "
    "process's own GPU, by LOCAL_RANK). GPU runs are not yet verified by royalty's tests (README).",
)

GenerateDeviceOption = typer.Option(
    "cpu",
    "--device",
    help="Where to sample: cpu, cuda or cuda:N (the starting noise is drawn on the CPU either way). "
    "GPU sampling is not yet verified by royalty's tests (README).",
)
