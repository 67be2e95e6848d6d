"""Options shared by several commands, defined once."""

from __future__ import annotations

import typer

QuietOption = typer.Option(False, "--quiet", "-q", help="Silence progress, tables and warnings on stderr.")
