"""Turning image files into model input: the one pixel pipeline every folder goes through.

Training images, targets and the reference set must be preprocessed identically, or a
value would partly measure a preprocessing difference instead of what the model learned.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from royalty.attribution.data.square import to_square_rgb

# Suffixes that count as images when a folder has no metadata to list its files.
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})

# What PIL raises on a file it cannot decode: unknown format (UnidentifiedImageError is an
# OSError), truncated data (OSError), broken chunks (SyntaxError), bad headers (ValueError),
# too many pixels (DecompressionBombError).
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)


class ImageDecodeError(Exception):
    """A file could not be decoded as an image; the caller adds which row/file it was."""


def list_image_files(root: Path) -> list[str]:
    """Image files under `root` as sorted POSIX paths relative to it.

    Hidden files and folders (".DS_Store", ".ipynb_checkpoints/") are tool droppings,
    not targets. Symlinked folders are not followed, so a listing cannot loop; a
    symlinked file is listed and the caller checks where it points.
    """
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            found.append((Path(dirpath) / name).relative_to(root).as_posix())
    return sorted(found)


def decode_image(data: bytes, resolution: int) -> torch.Tensor:
    """Raw file bytes -> float32 tensor [3, resolution, resolution] in [-1, 1].

    Taking bytes (not a path) lets the caller hash exactly the bytes that were decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            square = to_square_rgb(img, resolution)
    except UnidentifiedImageError as exc:
        # PIL's own message names an in-memory buffer address: useless and not reproducible.
        raise ImageDecodeError("not a recognised image format") from exc
    except _DECODE_ERRORS as exc:
        raise ImageDecodeError(str(exc) or type(exc).__name__) from exc
    pixels = np.asarray(square, dtype=np.float32)  # [R, R, 3], 0..255
    return torch.from_numpy(pixels / 127.5 - 1.0).permute(2, 0, 1).contiguous()
