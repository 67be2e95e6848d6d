"""stderr output shared by every command: rich console, quiet mode, NO_COLOR.

stdout carries only the machine document; everything meant for people goes here.
"""

from __future__ import annotations

import sys

from rich.console import Console


def make_console(quiet: bool = False) -> Console:
    # rich honours NO_COLOR itself; quiet mode swallows everything but errors.
    return Console(stderr=True, quiet=quiet, soft_wrap=True)


def print_error(message: str) -> None:
    Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {message}", highlight=False, markup=True)


def write_stdout(text: str) -> None:
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")
    sys.stdout.flush()
