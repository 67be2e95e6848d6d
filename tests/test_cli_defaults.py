"""`royalty train`'s option defaults are the library's: one source for each."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import typer

from royalty.attribution.training.config import TrainConfig
from royalty.cli.app import _register_commands, app

_register_commands()

# options whose command-line form differs from the config field on purpose
DIFFERENT_FORM = {
    "no_values": ("values", lambda cli: not cli),  # a flag that turns values off
    "freeze": ("freeze", tuple),  # repeatable option → tuple
    "lora_targets": ("lora_targets", lambda cli: tuple(cli) or None),  # repeatable; none given → the default list
}
COMMAND_ONLY = {"data", "targets", "out", "resume", "force", "quiet", "mixed_precision"}  # not config defaults


def test_every_train_default_is_the_configs() -> None:
    command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    config = TrainConfig(data=Path(), targets=Path(), out=Path())
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    checked = 0
    for param in command.params:
        if param.name in COMMAND_ONLY:
            continue
        if param.name in ("lr", "optimizer", "timestep_draws", "target_max_timestep", "order", "curvature"):
            # recipe options: None on the command line, resolved by the model's recipe; the
            # library's defaults are the from-scratch recipe (test_text_to_image checks both)
            from royalty.attribution.training.config import FROM_SCRATCH

            assert param.default is None and getattr(config, param.name) == getattr(FROM_SCRATCH, param.name)
            checked += 1
            continue
        field, convert = DIFFERENT_FORM.get(param.name, (param.name, lambda cli: cli))
        assert field in fields, f"--{param.name} has no TrainConfig field"
        assert convert(param.default) == getattr(config, field), f"--{param.name}: {param.default!r} vs {getattr(config, field)!r}"
        checked += 1
    assert checked >= 20  # the options above, not an empty loop
