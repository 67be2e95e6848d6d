"""The `royalty` command: parses, calls the library, translates domain errors.

Each command lives in its own module and registers itself on `app` below.
"""

from __future__ import annotations

import sys

import typer

from royalty import __version__
from royalty.cli.console import print_error
from royalty.cli.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, exit_code_for
from royalty.errors import RoyaltyError

app = typer.Typer(
    name="royalty",
    help="Pay copyright owners for what a diffusion model learned from their work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """Pay copyright owners for what a diffusion model learned from their work."""


def _register_commands() -> None:
    # Imported here so that each command module can import `app` without a cycle.
    from royalty.cli import commands  # noqa: F401


def main() -> None:
    _register_commands()
    try:
        app(standalone_mode=True)
    except RoyaltyError as error:
        print_error(str(error))
        sys.exit(exit_code_for(error))
    except KeyboardInterrupt:
        print_error("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception as error:  # a bug: say so plainly, keep the traceback for reports
        import traceback

        traceback.print_exc()
        print_error(f"unexpected error: {error!r}")
        sys.exit(EXIT_UNEXPECTED)
