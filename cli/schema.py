"""`royalty schema NAME`: print the JSON Schema of a document the tool writes."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import typer

from royalty.cli.app import app
from royalty.cli.console import write_stdout
from royalty.cli.help import examples
from royalty.errors import UsageError
from royalty.payout.schema import payout_schema
from royalty.report.schema import report_schema

# Document name → schema builder. Commands that add a JSON document register it here.
SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "payout": payout_schema,
    "report": report_schema,
}


@app.command("schema", epilog=examples("royalty schema payout > payout.schema.json"))
def schema(
    name: str = typer.Argument(..., metavar="NAME", help=f"Document: {', '.join(sorted(SCHEMAS))}."),
) -> None:
    """Print the JSON Schema (draft 2020-12) of a document to stdout."""
    builder = SCHEMAS.get(name)
    if builder is None:
        raise UsageError(f"no schema named {name!r}; known: {', '.join(sorted(SCHEMAS))}")
    write_stdout(json.dumps(builder(), indent=2, ensure_ascii=False))
