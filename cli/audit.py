"""`royalty audit`: retrain on owner subsets, compare the run's values with retraining Shapley."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from royalty.cli.app import app
from royalty.cli.console import make_console, write_stdout
from royalty.cli.help import examples
from royalty.cli.options import QuietOption
from royalty.cli.progress import PlainProgress
from royalty.errors import UsageError

if TYPE_CHECKING:
    from royalty.attribution.audit.service import AuditHooks


class AuditFormat(str, Enum):
    json = "json"
    table = "table"


def parse_owners(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"--owners must be 'all' or a number of owners, got {text!r}") from None


@app.command(
    "audit",
    epilog=examples("royalty audit runs/sample --format table", "royalty audit runs/sample --seeds 3 --budget 60 > audit.json"),
)
def audit_command(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train` (verified against its run.json)."),
    owners: str = typer.Option("all", "--owners", help="'all', or N: audit the N owners with the most images; the others stay in every coalition."),
    seeds: int = typer.Option(2, "--seeds", help="Retraining seeds (seed 0: the run's own batches; more give the noise floor)."),
    budget: float = typer.Option(None, "--budget", metavar="MINUTES", help="Start no retraining after this many minutes; run again to resume."),
    permutations: int = typer.Option(10, "--permutations", help="Owner orders sampled when there are more than 6 owners."),
    game: str = typer.Option("subset", "--game", metavar="subset|batch-mask", help="How a coalition retrains: on its images alone (subset), or on the run's batches with the other owners' rows dropped (batch-mask: the game in-run values approximate)."),
    fmt: AuditFormat = typer.Option(AuditFormat.json, "--format", "-f", help="json: the document on stdout; table: only the table (on stdout)."),
    quiet: bool = QuietOption,
) -> None:
    """Check the run's values against retraining: Shapley over owner subsets, and how well they agree."""
    from royalty.attribution.audit.service import AuditConfig

    config = AuditConfig(run=run, owners=parse_owners(owners), seeds=seeds, budget_minutes=budget, permutations=permutations, game=game)
    # torch and diffusers load here, not at start-up: other commands stay fast
    from royalty.attribution.audit.service import run_audit

    console = make_console(quiet)
    # a terminal gets bars; a log file or pipe a plain line per retraining (cli/progress.py)
    progress = _bars if console.is_terminal and not quiet else _lines
    with progress(console, run) as hooks:
        doc = run_audit(config, hooks)
    for note in doc["notes"]:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    if fmt is AuditFormat.table:
        out = Console(soft_wrap=True, highlight=False)  # stdout: the table is the document
        if not out.is_terminal:
            out.width = 160  # a file or pipe: no terminal width to fit, keep rows on one line
        render_table(doc, out)
        return
    render_table(doc, console)
    write_stdout(json.dumps(doc, indent=2, sort_keys=True))


@contextlib.contextmanager
def _bars(console: Console, run: Path) -> Iterator[AuditHooks]:
    """One bar for the retrainings, one for the current retraining's steps."""
    from royalty.attribution.audit.service import AuditHooks

    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
    ) as bar:
        overall = bar.add_task("retrainings", total=None)
        phase = bar.add_task("", total=None, visible=False)

        def on_start(todo: int, stored: int) -> None:
            _resuming(console, run, stored)
            bar.update(overall, total=todo, completed=0)

        def on_phase(label: str, steps: int) -> None:
            bar.reset(phase, total=steps, description=label, visible=True)

        yield AuditHooks(
            on_start=on_start,
            on_phase=on_phase,
            on_step=lambda done: bar.update(phase, completed=done),
            on_retrained=lambda _record: bar.advance(overall),
        )


@contextlib.contextmanager
def _lines(console: Console, run: Path) -> Iterator[AuditHooks]:
    """A plain line when the retrainings start and as each one finishes (nothing with --quiet)."""
    from royalty.attribution.audit.service import AuditHooks

    state: dict[str, Any] = {}

    def on_start(todo: int, stored: int) -> None:
        _resuming(console, run, stored)
        state.update(todo=todo, done=0, line=PlainProgress(console, "retrainings"))
        state["line"](0, todo, math.nan)

    def on_retrained(_record: Any) -> None:
        state["done"] += 1
        state["line"](state["done"], state["todo"], math.nan)

    yield AuditHooks(on_start=on_start, on_retrained=on_retrained)


def _resuming(console: Console, run: Path, stored: int) -> None:
    if stored:
        console.print(f"resuming: {stored} retraining(s) already stored in {run / 'audit'}", highlight=False)


LABELS = {
    "in_run_vs_retraining": "in-run vs retraining",
    "in_run_vs_one_seed": "in-run vs one seed",
    "noise_floor": "seed vs seed",
    "in_run_linear_subset_vs_retraining": "in-run, as the linear subset game, vs retraining",
    "first_order_only": "first order",
    "leave_one_out_vs_retraining": "leave-one-out",
    "": "vs retraining",
    "in_run": "in-run",
    "in_run_specific": "in-run specific",
    "retraining_shapley": "retraining Shapley",
    "retraining_shapley_specific": "retraining Shapley specific",
    "leave_one_out": "leave-one-out",
}


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    return f"{x:.{digits}f}"


def render_table(doc: dict[str, Any], console: Console) -> None:
    game, cost = doc["game"], doc["cost"]
    console.print(
        f"audit of {doc['run']} ({game['game']} game): {len(game['players'])} owners, {game['method']} Shapley, "
        f"{len(game['seeds_complete'])}/{game['seeds']} seeds complete, "
        f"{cost['retrainings_done']}/{cost['retrainings_needed']} retrainings, {cost['seconds']:.0f} s"
    )
    if doc["summary"] is None:
        console.print("no seed is complete yet: run the audit again to go on")
        return
    table = Table(title="agreement (mean over targets; overall: on the owners' totals)")
    for column in ("basis", "comparison", "Spearman", "sign agree", "L1 shares", "top owner", "overall Spearman", "overall L1"):
        table.add_column(column, justify="left" if column in ("basis", "comparison") else "right")
    for basis, comparisons in doc["summary"].items():
        items = comparisons.items() if "in_run_vs_retraining" in comparisons else [("", comparisons)]
        for name, m in items:
            if m is None:
                continue
            table.add_row(
                LABELS.get(basis, basis), LABELS.get(name, name), _fmt(m["spearman_mean"]), _fmt(m["sign_agreement"]),
                _fmt(m["l1_share_distance"]), _fmt(m["top_owner_agreement"]),
                _fmt(m["overall"]["spearman"]), _fmt(m["overall"]["l1_share_distance"]),
            )
    console.print(table)
    owners = Table(title="owners (summed over targets)")
    for column in ("owner", "images", "in-run", "retraining Shapley", "leave-one-out", "share in-run", "share retraining"):
        owners.add_column(column, justify="left" if column == "owner" else "right")
    for o in doc["owners"]:
        owners.add_row(o["owner"], str(o["images"]), _fmt(o["in_run"], 5), _fmt(o["retraining_shapley"], 5),
                       _fmt(o["leave_one_out"], 5), _fmt(o["share_in_run"]), _fmt(o["share_retraining"]))
    console.print(owners)
    accuracy = doc["owner_accuracy"]
    if accuracy is not None:
        console.print(
            f"owner accuracy ({accuracy['targets']} targets that name an audited owner; top owner is that owner): "
            + ", ".join(f"{LABELS.get(b, b)} {m['hits']}/{accuracy['targets']}" for b, m in accuracy["by_basis"].items())
        )
    eff = doc["efficiency"]
    console.print(
        f"efficiency: Σ value_sum {_fmt(eff['total_value_sum'], 5)} vs measured change "
        f"{_fmt(eff['total_loss_change'], 5)} (gap {_fmt(eff['relative_gap'])}), per-step Pearson {_fmt(eff['per_step_pearson'])}"
    )
    so = doc["second_order"]
    if so is not None and "with_second_order" in so:
        console.print(
            f"second order: mean |gap| per target {_fmt(so['first_order']['mean_abs_gap'], 5)} (first) → "
            f"{_fmt(so['with_second_order']['mean_abs_gap'], 5)} (with second); closes the gap: {_fmt(so['second_order_closes_gap'])}"
        )
