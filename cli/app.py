"""The `royalty` command: parses, calls the library, translates domain errors.

Each command lives in its own module and registers itself on `app` below.
"""

from __future__ import annotations

import sys
from typing import Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

from royalty import __version__
from royalty.allocator import tune_cpu_allocator
from royalty.cli.console import print_error
from royalty.cli.errors import EXIT_INTERRUPTED, EXIT_UNEXPECTED, exit_code_for
from royalty.cli.help import examples
from royalty.errors import RoyaltyError
from royalty.quiet import quiet_model_libraries


class _PlainHelp:
    """Help as a user reads it, whatever typer's defaults: a flag shows no value type
    (`--force`, not `--force <bool>`: it takes none), and arguments are named in capitals
    in the usage line and the arguments panel (`royalty train [OPTIONS] DATA`).
    """

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""  # what help shows as the flag's value type: nothing
            if isinstance(param, TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []  # type: ignore[attr-defined]
        for param in self.get_params(ctx):
            if isinstance(param, TyperArgument):
                name = param.metavar or (param.name or "").upper()
                name = name if param.required else f"[{name}]"
                pieces.append(f"{name}..." if param.nargs != 1 else name)
            else:
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


class RoyaltyCommand(_PlainHelp, TyperCommand):
    """Every `royalty` command (the default of `app.command`)."""


class RoyaltyGroup(_PlainHelp, TyperGroup):
    """`royalty` itself."""

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return [*super().collect_usage_pieces(ctx), self.subcommand_metavar]


class _Royalty(typer.Typer):
    def command(self, *args: Any, cls: type[TyperCommand] | None = None, **kwargs: Any) -> Any:
        return super().command(*args, cls=cls or RoyaltyCommand, **kwargs)


app = _Royalty(
    cls=RoyaltyGroup,
    name="royalty",
    help="Pay copyright owners for what a diffusion model learned from their work.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    epilog=examples(
        "royalty train sample_data/train --targets sample_data/targets --out runs/sample --steps 50",
        "royalty payout runs/sample --revenue 1000.00",
        "royalty COMMAND --help",
    ),
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
    quiet_model_libraries()
    tune_cpu_allocator()  # CPU steps re-use their pages instead of faulting in fresh ones
    _register_commands()
    try:
        app(standalone_mode=True, prog_name="royalty")  # `python -m royalty.cli` too
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
