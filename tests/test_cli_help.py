"""Every command's --help as a user reads it (issue 21): an example, no placeholders.

The commands are enumerated from the typer app, so a new command is covered without
editing this file. In-process (CliRunner) for speed, and once through the real entry
point in a subprocess.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from royalty.cli.app import _register_commands, app
from train_fixtures import royalty

_register_commands()
COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
README = Path(__file__).resolve().parent.parent / "README.md"
# what typer renders when it is left to itself: "--force <bool>", "Usage: … {data}"
PLACEHOLDER = re.compile(r"<bool>|\{[^}\s]*\}")


def help_text(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_the_app_has_all_its_commands() -> None:
    assert {"train", "payout", "generate", "attribute", "audit", "report", "schema"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example_and_no_placeholders(command: str) -> None:
    text = help_text(command)
    usage = next(line for line in text.splitlines() if "Usage:" in line)
    assert f"royalty {command} [OPTIONS]" in usage
    assert re.search(r"Examples?:", text), text
    assert re.search(rf"^\s*royalty {command} \S", text.split("Example")[-1], flags=re.M), text  # the example runs this command
    assert not PLACEHOLDER.search(text), PLACEHOLDER.search(text)
    arguments = typer.main.get_command(app).commands[command].params  # type: ignore[attr-defined]
    for param in arguments:
        if param.param_type_name == "argument":
            assert param.name.upper() in usage.split(), usage  # `DATA`, `RUN`: not `{data}`


def test_root_help_has_an_example_and_no_placeholders() -> None:
    text = help_text()
    assert "Example" in text and "royalty [OPTIONS] COMMAND [ARGS]..." in text
    assert not PLACEHOLDER.search(text)


def test_payout_help_says_revenue_or_sales_is_required() -> None:
    text = " ".join(help_text("payout").split())
    assert "exactly one of --revenue AMOUNT" in text and "or --sales FILE" in text


def test_generate_device_help_speaks_of_generate() -> None:
    text = help_text("generate")
    device = text[text.index("--device"):text.index("--quiet")]
    assert "royalty train" not in device and "torchrun" not in device and "sample" in device


def test_every_train_option_is_in_the_readme_table() -> None:
    section = README.read_text().split("## `royalty train`", 1)[1].split("\n## ", 1)[0]
    synopsis = section.split("```")[1]  # royalty train DATA --targets TARGETS --out RUN [options]
    table = synopsis.replace(" --", " `--") + "\n".join(line for line in section.splitlines() if line.startswith("| `--"))
    options = {
        opt
        for param in typer.main.get_command(app).commands["train"].params  # type: ignore[attr-defined]
        for opt in param.opts
        if opt.startswith("--") and opt != "--help"
    }
    missing = sorted(opt for opt in options if not re.search(rf"`{re.escape(opt)}[ `]", table))
    assert not missing, f"README's train table lacks {missing}"


def test_help_through_the_installed_entry_point() -> None:
    """The real `python -m royalty.cli`, in a subprocess: the root lists every command."""
    top = royalty("--help", check=True, fresh=True)
    for command in COMMANDS:
        assert re.search(rf"^\W*{command}\s", top.stdout, flags=re.M), (command, top.stdout)
    train = royalty("train", "--help", check=True, fresh=True)
    assert "Usage: royalty train [OPTIONS] DATA" in train.stdout and not PLACEHOLDER.search(train.stdout)
    assert "Example" in train.stdout
