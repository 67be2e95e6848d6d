"""`royalty report`: one self-contained HTML page showing why each owner gets paid."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from royalty.cli.app import app
from royalty.cli.console import make_console, write_stdout
from royalty.cli.help import examples
from royalty.cli.options import QuietOption
from royalty.payout.policy import Basis
from royalty.report.service import DEFAULT_MAX_TARGETS, DEFAULT_TOP, ReportRequest, build_report


@app.command(
    "report",
    epilog=examples("royalty report runs/sample", "royalty report runs/sample --attribution gen --basis specific"),
)
def report(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train` (verified against its run.json)."),
    out: Path | None = typer.Option(
        None, "--out", "-o", metavar="FILE",
        help="The HTML page to write (default: RUN/report.html; with --attribution NAME, RUN/attributions/NAME/report.html); "
        "PNG plots go to FILE's <stem>_files/ folder.",
        show_default=False,
    ),
    attribution: str | None = typer.Option(
        None, "--attribution", metavar="NAME", help="Show the targets of RUN/attributions/NAME (from `royalty attribute`) instead of the run's own."
    ),
    top: int = typer.Option(DEFAULT_TOP, "--top", metavar="N", help="Training images shown per target, largest value first."),
    basis: Basis = typer.Option(
        Basis.RAW, "--basis", help="raw: the whole contribution (value); specific: beyond the run's reference set (value_specific)."
    ),
    max_targets: int = typer.Option(
        DEFAULT_MAX_TARGETS, "--max-targets", metavar="N", help="Show the first N targets by target_id; the page says how many were left out."
    ),
    quiet: bool = QuietOption,
) -> None:
    """Write an HTML report of a run's values: per target, its top contributing training images, owner shares and value distribution; for the run, owner totals and the efficiency trace.

    Every image is inline, so the one file is the whole report. A JSON summary goes to stdout.
    """
    console = make_console(quiet)
    request = ReportRequest(run_dir=run, out=out, attribution=attribution, top=top, basis=basis, max_targets=max_targets)
    summary = build_report(request, progress=lambda msg: console.print(msg, highlight=False, markup=False))
    console.print(f"wrote {summary['out']} ({summary['targets_shown']} of {summary['targets_total']} targets)", highlight=False, markup=False)
    write_stdout(json.dumps(summary, indent=2, ensure_ascii=False))
