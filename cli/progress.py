"""Progress of the long-running commands (steps, loss, elapsed, ETA) on stderr.

On a terminal: one rich progress bar, redrawn in place. Anywhere else (a log file,
nohup, a cluster job's output, a pipe) a redrawn bar shows nothing until it ends, so
there it prints plain lines instead: the first step, then whenever PLAIN_INTERVAL_S
seconds have passed or another PLAIN_PERCENT % of the steps is done, and the last step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

StepProgress = Callable[[int, int, float], None]  # (done, total, loss; NaN: no loss to show)

PLAIN_INTERVAL_S = 10.0
PLAIN_PERCENT = 5


@contextlib.contextmanager
def step_progress(
    console: Console, description: str, total: int, quiet: bool, *,
    interval_s: float = PLAIN_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
) -> Iterator[StepProgress]:
    if quiet:
        yield lambda done, total, loss: None
        return
    if not console.is_terminal:
        yield PlainProgress(console, description, interval_s=interval_s, clock=clock)
        return
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    ) as bar:
        task = bar.add_task(description, total=total, loss="")

        def update(done: int, total: int, loss: float) -> None:
            bar.update(task, completed=done, total=total, loss="" if math.isnan(loss) else f"loss {loss:.4f}")

        yield update


class PlainProgress:
    """A StepProgress that prints a line now and then, for a stderr that is not a terminal.

    A line: `train: 12/150 (8%), loss 0.0123, elapsed 0:01:02, ETA 0:09:30`. The ETA
    extrapolates the pace since the first update (a resumed run starts there).
    """

    def __init__(
        self, console: Console, description: str, *,
        interval_s: float = PLAIN_INTERVAL_S, percent: int = PLAIN_PERCENT, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._console, self._description = console, description
        self._interval_s, self._percent, self._clock = interval_s, percent, clock
        self._start = clock()
        self._first: tuple[float, int] | None = None  # (time, done) of the first update
        self._last: tuple[float, int] | None = None  # (time, done) of the last line printed

    def __call__(self, done: int, total: int, loss: float) -> None:
        now = self._clock()
        if self._first is None:
            self._first = (now, done)
        if self._due(now, done, total):
            self._last = (now, done)
            self._console.print(self.line(now, done, total, loss), highlight=False, markup=False)

    def _due(self, now: float, done: int, total: int) -> bool:
        if self._last is None:
            return True
        last_time, last_done = self._last
        if done == last_done:
            return False
        if done >= total or now - last_time >= self._interval_s:
            return True
        share = max(1, total) * self._percent  # a new multiple of PERCENT % reached
        return done * 100 // share > last_done * 100 // share

    def line(self, now: float, done: int, total: int, loss: float) -> str:
        percent = 100 * done // total if total > 0 else 100
        text = f"{self._description}: {done}/{total} ({percent}%)"
        if not math.isnan(loss):
            text += f", loss {loss:.4f}"
        text += f", elapsed {_clock_time(now - self._start)}"
        first_time, first_done = self._first or (now, done)
        if done >= total:
            return text + ", done"
        if done > first_done:
            text += f", ETA {_clock_time((now - first_time) / (done - first_done) * (total - done))}"
        else:
            text += ", ETA –"
        return text


def _clock_time(seconds: float) -> str:
    whole = int(round(max(0.0, seconds)))
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"
