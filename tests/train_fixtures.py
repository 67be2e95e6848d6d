"""Tiny owner-tagged image folders for the train tests, drawn with PIL.

Each owner has a style (a palette and a stroke), each concept a shape, so the data
mirrors sample_data at 16 px and trains in seconds.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

STYLES = {"ann": ((200, 40, 40), 1), "bob": ((40, 40, 200), 3)}
CONCEPTS = ("circle", "square", "cross", "bar")


def draw(concept: str, owner: str, size: int = 16) -> Image.Image:
    colour, width = STYLES[owner]
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    box = (3, 3, size - 4, size - 4)
    if concept == "circle":
        d.ellipse(box, outline=colour, width=width)
    elif concept == "square":
        d.rectangle(box, outline=colour, width=width)
    elif concept == "cross":
        d.line((3, 3, size - 4, size - 4), fill=colour, width=width)
        d.line((3, size - 4, size - 4, 3), fill=colour, width=width)
    else:
        d.rectangle((3, size // 2 - width, size - 4, size // 2 + width), fill=colour)
    return img


def make_data(root: Path, concepts: tuple[str, ...] = CONCEPTS[:3]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for owner in STYLES:
        for concept in concepts:
            name = f"{owner}_{concept}.png"
            draw(concept, owner).save(root / name)
            rows.append({"file_name": name, "owner": owner, "caption": concept, "license": "CC0-1.0"})
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def make_targets(root: Path, concept: str = CONCEPTS[3]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "target_id", "owner"])
        for owner in STYLES:
            draw(concept, owner).save(root / f"{owner}.png")
            writer.writerow([f"{owner}.png", f"{concept}-{owner}", owner])
    return root


def royalty(*args: str | os.PathLike, check: bool = False, threads: int | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the real CLI in a subprocess (`threads`: its OMP_NUM_THREADS, else the caller's)."""
    env = {**os.environ, "NO_COLOR": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(
        [sys.executable, "-m", "royalty.cli", *map(str, args)], capture_output=True, text=True, env=env, **kw
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"royalty {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr}")
    return proc


TINY = ("--resolution", "16", "--batch-size", "3", "--timestep-draws", "2", "--lr", "0.05", "--quiet")
