"""Tiny three-owner data for the audit tests: 2 images per owner, 16 px, a few steps.

Three owners make 7 non-empty coalitions per seed: enough for a real Shapley game, cheap
enough to retrain in a test.
"""

from __future__ import annotations

import csv
from pathlib import Path

from PIL import Image, ImageDraw

STYLES = {"ann": ((200, 40, 40), 1), "bob": ((40, 40, 200), 3), "cy": ((30, 160, 30), 2)}
CONCEPTS = ("circle", "square")


def draw(concept: str, owner: str, size: int = 16) -> Image.Image:
    colour, width = STYLES[owner]
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    box = (3, 3, size - 4, size - 4)
    if concept == "circle":
        d.ellipse(box, outline=colour, width=width)
    elif concept == "square":
        d.rectangle(box, outline=colour, width=width)
    else:
        d.line((3, 3, size - 4, size - 4), fill=colour, width=width)
    return img


def make_data(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "owner"])
        for owner in STYLES:
            for concept in CONCEPTS:
                name = f"{owner}_{concept}.png"
                draw(concept, owner).save(root / name)
                writer.writerow([name, owner])
    return root


def make_targets(root: Path) -> Path:
    """One unseen-concept target per owner's style."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file_name", "target_id", "owner"])
        for owner in STYLES:
            draw("cross", owner).save(root / f"{owner}.png")
            writer.writerow([f"{owner}.png", f"cross-{owner}", owner])
    return root


TRAIN_ARGS = (
    "--resolution", "16", "--batch-size", "3", "--timestep-draws", "2", "--lr", "0.02",
    "--warmup-steps", "2", "--steps", "3", "--quiet",
)
