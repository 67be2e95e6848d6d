"""`royalty train --out`: what the folder holds, and whether a run may write into it.

A run writes its marker first (whose recipe it is), checkpoints as it goes and the
manifest (`run.json`) last. What the folder holds decides what a new command may do:

- nothing, or nothing saved (a marker and at most the unfinished outputs of a run killed
  or failed before its first checkpoint): any run starts there, no flag needed;
- a finished run (its manifest) or checkpoints: kept. The same recipe continues with
  `--resume`; `--force` replaces it; anything else is refused, saying which case it is.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from royalty import __version__
from royalty.atomic import write_text
from royalty.attribution.training import checkpoint
from royalty.attribution.contract import run_folder
from royalty.attribution.training.config import TrainConfig
from royalty.errors import OutputError, UsageError

MARKER = ".royalty-run"  # written first into a run folder: says whose it is


@dataclass(frozen=True)
class Held:
    """The royalty run a folder holds."""

    recipe: str | None  # the marker's recipe hash (None: unreadable)
    options: dict | None  # the config it was started with, but --out (None: a marker from before it was kept)
    finished: bool  # its manifest is there
    checkpoints: tuple[int, ...]  # valued steps of its checkpoints

    @property
    def saved(self) -> bool:
        """Anything worth keeping: a finished run or a checkpoint to resume from."""
        return self.finished or bool(self.checkpoints)

    @property
    def progress(self) -> str:
        """How far its last checkpoint got (it must have one)."""
        return progress(self.checkpoints[-1])


def held_run(out: Path) -> Held | None:
    """The run `out` holds, or None if it holds no royalty marker."""
    marker = out / MARKER
    if not marker.is_file():
        return None
    try:
        doc = json.loads(marker.read_text())
        recipe, options = doc.get("recipe"), doc.get("options")
    except (OSError, ValueError, AttributeError):
        recipe, options = None, None
    return Held(recipe, options if isinstance(options, dict) else None, (out / run_folder.MANIFEST).is_file(),
                tuple(checkpoint.list_steps(out)))


def _options(config: TrainConfig) -> dict:
    """The config as the marker keeps it (through JSON: tuples come back as lists)."""
    return json.loads(json.dumps({k: v for k, v in config.to_json().items() if k != "out"}))


def differences(held: dict, config: TrainConfig) -> str:
    """The options a resume gives otherwise than the run was started with, as flags:
    "--lr 0.05 then, 0.07 now"; empty when they agree."""
    now = _options(config)
    keys = sorted(k for k in set(held) | set(now) if held.get(k) != now.get(k))
    return "; ".join(f"--{k.replace('_', '-')} {held.get(k)} then, {now.get(k)} now" for k in keys)


def check_out(config: TrainConfig, resume: bool, force: bool) -> None:
    """Refuse, before anything is trained, an --out this command must not write into."""
    out = config.out
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} exists and is not a folder")
    if not out.exists() or not any(out.iterdir()):
        if resume:
            raise UsageError(f"--resume: {out} holds no run to resume")
        return
    held = held_run(out)
    if held is None:
        raise OutputError(f"--out {out} is not empty and holds no royalty run; choose an empty or new folder")
    if force:
        return
    same = held.recipe == config.recipe_hash()
    if resume:
        if not same:
            what = differences(held.options, config) if held.options is not None else ""
            raise UsageError(
                f"--resume: the run in {out} was started with different inputs or options"
                + (f" ({what}): give the options it was started with" if what else "")
            )
        return
    if not held.saved:
        return  # interrupted or failed before saving anything: a new run starts over there
    if same and held.finished:
        raise OutputError(
            f"--out {out} holds a finished run of this same recipe: it is already complete ({run_folder.MANIFEST}). "
            "Use --force to train it again, or choose another --out"
        )
    if same:
        raise OutputError(
            f"--out {out} holds an unfinished run of this same recipe ({held.progress}). "
            "Pass --resume to continue it, or --force to start over"
        )
    what = "a finished run of another recipe (other inputs or options)" if held.finished else (
        f"an unfinished run of another recipe (other inputs or options; {held.progress})"
    )
    raise OutputError(f"--out {out} holds {what}. Use --force to replace it, or choose another --out")


def progress(step: int) -> str:
    """How far a checkpoint got: `step` valued steps done (0: the weights after the warm-up)."""
    return f"its last checkpoint has {step} valued step{'' if step == 1 else 's'} done"


def start(out: Path, config: TrainConfig, fresh: bool) -> bool:
    """Rank 0, once `check_out` passed: make the folder this run's; True if it created it.

    `fresh` (--force, or not --resume): first remove what a royalty run writes — after
    --force the replaced run, otherwise the unsaved leftovers of an interrupted or failed one.
    """
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    if fresh:
        clear_run(out)
    remove_stale_temporaries(out)
    if not (out / MARKER).exists():
        write_text(out / MARKER, json.dumps({"recipe": config.recipe_hash(), "options": _options(config), "royalty": __version__}) + "\n")
    return created


def forget_unsaved(out: Path, created: bool) -> None:
    """A run that failed before saving anything leaves nothing behind: not even its marker
    (nor the folder, if the run created it). A finished run or checkpoints stay as they are.
    """
    held = held_run(out)
    if held is None or held.saved:
        return
    clear_run(out)
    remove_stale_temporaries(out)
    if created and out.is_dir() and not any(out.iterdir()):
        out.rmdir()


def remove_stale_temporaries(out: Path) -> None:
    """Temporary files a killed run left behind: never renamed into place, never valid."""
    for tmp in list(out.rglob(".*.tmp")):
        shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def clear_run(out: Path) -> None:
    """Remove what a royalty run writes, nothing else."""
    for name in (run_folder.MANIFEST, run_folder.VALUES, run_folder.STEPS, MARKER):
        (out / name).unlink(missing_ok=True)
    for name in (run_folder.MODEL_DIR, run_folder.CHECKPOINTS_DIR):
        shutil.rmtree(out / name, ignore_errors=True)
