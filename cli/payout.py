"""`royalty payout`: split revenue among owners by their images' values (docs/design.md §3)."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from royalty.atomic import write_text
from royalty.cli.app import app
from royalty.cli.console import make_console, write_stdout
from royalty.cli.help import examples
from royalty.cli.options import OutputOption, QuietOption
from royalty.errors import OutputError, UsageError
from royalty.payout.formats import DETAIL_FORMATS, render, statement_title, summary_rows
from royalty.payout.policy import Basis, OnNoPositive
from royalty.payout.service import PayoutRequest, check_request, compute_payout


SUMMARY_ROWS = 20


class PayoutFormat(str, Enum):
    json = "json"
    jsonl = "jsonl"
    csv = "csv"
    table = "table"
    beancount = "beancount"
    hledger = "hledger"


@app.command(
    "payout",
    epilog=examples(
        "royalty payout runs/sample --revenue 1000.00",
        "royalty payout runs/sample --sales sales.csv --format csv --output statement.csv",
        "royalty payout runs/sample --attribution gen --sales sales.csv",
    ),
)
def payout(
    run: Path = typer.Argument(..., help="Run folder written by `royalty train` (verified against its run.json)."),
    revenue: str | None = typer.Option(
        None, "--revenue", metavar="AMOUNT", help="Total to split over all targets, weighted equally, e.g. 1000.00. Give this or --sales (exactly one is required)."
    ),
    sales: Path | None = typer.Option(
        None,
        "--sales",
        metavar="FILE",
        help="Sales ledger, CSV or JSON Lines: sale_id, target_id, amount, optional currency and date. "
        "Each sale is split by the owner values for its own target. Give this or --revenue (exactly one is required).",
    ),
    currency: str | None = typer.Option(
        None,
        "--currency",
        metavar="CODE",
        help="ISO 4217 code of the amounts (default: USD, or the ledger's one currency). With a ledger "
        "that mixes currencies, pays the sales in CODE and reports the others as excluded.",
    ),
    basis: Basis = typer.Option(
        Basis.RAW,
        "--basis",
        help="raw: pay the whole contribution (value); specific: only what is specific to the target "
        "beyond the run's reference set (value_specific).",
    ),
    on_no_positive: OnNoPositive = typer.Option(
        OnNoPositive.FAIL,
        "--on-no-positive",
        help="When no owner's value is positive: fail (exit 65) or split equally among the owners.",
    ),
    min_payout: str | None = typer.Option(
        None,
        "--min-payout",
        metavar="AMOUNT",
        help="Owners allocated less than AMOUNT are paid 0 now; the amount is reported as carried forward "
        "for them, never given to others.",
    ),
    attribution: str | None = typer.Option(
        None,
        "--attribution",
        metavar="NAME",
        help="Pay for images attributed after training (`royalty attribute … --name NAME`) instead of the run's targets.",
    ),
    detail: bool = typer.Option(False, "--detail", help="Add per-sale lines (with --sales; json and jsonl only)."),
    fmt: PayoutFormat = typer.Option(PayoutFormat.json, "--format", "-f", help="Output format."),
    output: Path | None = OutputOption,
    quiet: bool = QuietOption,
) -> None:
    """Split revenue among copyright owners, exactly, by their images' values.

    Give exactly one of --revenue AMOUNT (one total over all targets) or --sales FILE (a ledger of sales, each split by its own target).

    Money is parsed from decimal strings into integer minor units and split by largest remainder (ties by owner, ascending), so the payees' amounts plus the carried-forward amount always equal the revenue to the minor unit.

    stdout carries only the document (nothing with --output); a summary table goes to stderr when it is a terminal.
    """
    request = PayoutRequest(
        run_dir=run,
        revenue=revenue,
        sales=sales,
        currency=currency,
        basis=basis,
        on_no_positive=on_no_positive,
        min_payout=min_payout,
        detail=detail,
        attribution=attribution,
    )
    check_request(request)
    if detail and fmt.value not in DETAIL_FORMATS:
        raise UsageError(f"--detail needs --format {' or '.join(DETAIL_FORMATS)}, not {fmt.value}")
    if output is not None and output.is_dir():
        raise OutputError(f"--output {output} is a folder; give a file name")

    doc = compute_payout(request)
    text = render(doc, fmt.value)
    console = make_console(quiet)
    if output is not None:
        write_text(output, text)
        console.print(f"wrote {output}", highlight=False, markup=False)
    else:
        write_stdout(text)
    if sys.stderr.isatty():
        _summary(console, doc)


def _summary(console: Console, doc: dict[str, Any]) -> None:
    header, rows, total = summary_rows(doc)
    table = Table(title=statement_title(doc), show_footer=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="right" if 0 < i < 6 else "left")
    # A person glancing at a terminal wants the largest payees; the document has them all.
    shown = sorted(range(len(rows)), key=lambda i: -doc["payees"][i]["amount"]["minor"])[:SUMMARY_ROWS]
    for i in sorted(shown):
        table.add_row(*rows[i], style="dim" if rows[i][6] != "paid" else None)
    if len(rows) > len(shown):
        table.add_row(f"… {len(rows) - len(shown)} more", *[""] * (len(header) - 1), style="dim")
    table.add_section()
    table.add_row(*total, style="bold")
    console.print(table)
