"""Progress on stderr: a bar on a terminal, plain lines in a log file or pipe (issue 21)."""

from __future__ import annotations

import io
import re

from rich.console import Console

from royalty.cli.progress import step_progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def console(terminal: bool, quiet: bool = False) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, quiet=quiet, width=120, color_system=None), out


def run(con: Console, clock: Clock, total: int, seconds_per_step: float, quiet: bool = False, start: int = 0) -> None:
    with step_progress(con, "train", total, quiet, interval_s=10.0, clock=clock) as progress:
        for done in range(start + 1, total + 1):
            clock.now += seconds_per_step
            progress(done, total, 0.5)


def done_counts(text: str) -> list[int]:
    return [int(m) for m in re.findall(r"^train: (\d+)/\d+ ", text, flags=re.M)]


def test_plain_lines_every_interval_first_and_last() -> None:
    con, out = console(terminal=False)
    run(con, Clock(), 1000, seconds_per_step=1.0)  # 10 s pass before 5 % (50 steps) is done...
    # ...but 5 % is reached at step 50 (whichever comes first), and the 10 s go on from there
    assert done_counts(out.getvalue()) == [1, 11, 21, 31, 41, *range(50, 1001, 10)]


def test_plain_lines_every_five_percent_when_steps_are_fast() -> None:
    con, out = console(terminal=False)
    run(con, Clock(), 1000, seconds_per_step=0.001)
    assert done_counts(out.getvalue()) == [1, *range(50, 1001, 50)]


def test_plain_line_says_loss_elapsed_and_eta() -> None:
    con, out = console(terminal=False)
    run(con, Clock(), 40, seconds_per_step=6.0)
    lines = out.getvalue().splitlines()
    assert lines[0] == "train: 1/40 (2%), loss 0.5000, elapsed 0:00:06, ETA –"
    # step 2 is 5 %: 1 step in 6 s since the first, 38 to go -> 228 s
    assert lines[1] == "train: 2/40 (5%), loss 0.5000, elapsed 0:00:12, ETA 0:03:48"
    assert lines[-1] == "train: 40/40 (100%), loss 0.5000, elapsed 0:04:00, done"


def test_plain_eta_of_a_resumed_run_uses_its_own_pace() -> None:
    con, out = console(terminal=False)
    run(con, Clock(), 100, seconds_per_step=1.0, start=60)  # resumed at step 60
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("train: 61/100 (61%)")
    assert lines[1] == "train: 65/100 (65%), loss 0.5000, elapsed 0:00:05, ETA 0:00:35"


def test_quiet_prints_nothing() -> None:
    con, out = console(terminal=False, quiet=True)
    run(con, Clock(), 100, seconds_per_step=20.0, quiet=True)
    assert out.getvalue() == ""


def test_a_terminal_gets_the_bar_not_lines() -> None:
    con, out = console(terminal=True)
    run(con, Clock(), 10, seconds_per_step=20.0)
    assert done_counts(out.getvalue()) == [] and "10/10" in out.getvalue()
