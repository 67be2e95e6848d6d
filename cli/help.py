"""Help text shared by the commands: the examples every command's --help ends with."""

from __future__ import annotations


def examples(*command_lines: str) -> str:
    """An epilog: "Example:" (or "Examples:") and one command per line, indented."""
    title = "Example:" if len(command_lines) == 1 else "Examples:"
    return title + "\n\n" + "\n".join(f"  {line}" for line in command_lines)
