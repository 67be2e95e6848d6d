"""Every command that reads a finished run back checks what it started from: a run trained
from `--model DIR` whose DIR changed since is refused by `attribute` and `audit` alike
(the audit used to open runs its own way, without this check)."""

from __future__ import annotations

from pathlib import Path

import pytest
from diffusers import DDPMPipeline

from royalty.attribution.model.diffusion import build_default_unet, default_scheduler
from train_fixtures import TINY, make_data, make_targets, royalty


@pytest.fixture(scope="module")
def run_from_a_base(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("base")
    base = root / "base"
    DDPMPipeline(unet=build_default_unet(16, seed=3), scheduler=default_scheduler()).save_pretrained(base)
    data, targets = make_data(root / "data"), make_targets(root / "targets")
    royalty("train", data, "--targets", targets, "--out", root / "run", "--model", base, "--steps", "2", *TINY, check=True)
    return root / "run", base, targets


@pytest.mark.parametrize("command", ["attribute", "audit"])
def test_a_changed_starting_model_is_refused(run_from_a_base, command, tmp_path) -> None:
    run, base, targets = run_from_a_base
    config = base / "unet" / "config.json"
    original = config.read_text()
    try:
        config.write_text(original.replace("{", '{"_changed": 1,', 1))
        args = ("attribute", run, targets, "--name", "x") if command == "attribute" else ("audit", run)
        proc = royalty(*args, "--quiet")
        assert proc.returncode == 65, proc.stderr
        assert "the model the run started from" in proc.stderr and "changed since training" in proc.stderr
    finally:
        config.write_text(original)
