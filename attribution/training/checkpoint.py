"""Checkpoints for --resume: the whole state of a run after a step, written atomically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from royalty.atomic import atomic_path
from royalty.attribution.contract.run_folder import CHECKPOINTS_DIR
from royalty.errors import DataError

_NAME = re.compile(r"^step-(\d{8})\.pt$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS_DIR / f"step-{step:08d}.pt"


def save(run_dir: Path, step: int, state: dict[str, Any]) -> Path:
    path = checkpoint_path(run_dir, step)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def list_steps(run_dir: Path) -> list[int]:
    folder = run_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    return sorted(int(m.group(1)) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def paths(run_dir: Path) -> list[Path]:
    return [checkpoint_path(run_dir, s) for s in list_steps(run_dir)]


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a checkpoint is only ever renamed into place whole
        raise DataError(f"checkpoint {path} cannot be read: {exc}") from exc


def load_latest(run_dir: Path) -> dict[str, Any] | None:
    steps = list_steps(run_dir)
    if not steps:
        return None
    return load(checkpoint_path(run_dir, steps[-1]))
