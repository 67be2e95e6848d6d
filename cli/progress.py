"""One progress bar for the long-running commands (steps, loss, elapsed, ETA) on stderr."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

StepProgress = Callable[[int, int, float], None]  # (done, total, loss; NaN: no loss to show)


@contextlib.contextmanager
def step_progress(console: Console, description: str, total: int, quiet: bool) -> Iterator[StepProgress]:
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False, disable=quiet,
    ) as bar:
        task = bar.add_task(description, total=total, loss="")

        def update(done: int, total: int, loss: float) -> None:
            bar.update(task, completed=done, total=total, loss="" if math.isnan(loss) else f"loss {loss:.4f}")

        yield update
