"""One picture → the square RGB image the model sees (and the report draws).

Torch-free on purpose: `royalty report` draws thumbnails with it, and importing torch
would triple the start-up of a command that never trains.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps


def to_square_rgb(img: Image.Image, resolution: int) -> Image.Image:
    """Upright, composited on white, center-cropped, resized to resolution x resolution RGB."""
    # Phone photos store rotation in EXIF; without this they train sideways.
    img = ImageOps.exif_transpose(img)
    img = _on_white(img)
    width, height = img.size
    side = min(width, height)
    if width != height:
        left, top = (width - side) // 2, (height - side) // 2
        img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def _on_white(img: Image.Image) -> Image.Image:
    # Emoji and icons are drawn on transparency; compositing before any resize keeps the
    # hidden colour of transparent pixels from bleeding into the edges.
    if img.mode.startswith("I;16"):
        # PIL converts 16-bit greyscale to 8 bits by clipping, which turns most of the
        # range white; scale it instead (65535 / 257 = 255).
        arr = np.asarray(img, dtype=np.uint32) // 257
        img = Image.fromarray(arr.astype(np.uint8))  # 2-D uint8 -> mode "L"
    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
