"""Inline thumbnails: each image as a small data: URI, decoded once however often shown.

Thumbnails show what the model saw — composited on white and centre-cropped square, as
training does — at most THUMB_SIDE pixels. Small images (emoji at 32 px) stay at their
own size as PNG and the page scales them up with crisp pixels; large ones become JPEG
to keep a page of hundreds of thumbnails light.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from royalty.errors import DataError

THUMB_SIDE = 128
_PNG_MAX_SIDE = 64


@dataclass(frozen=True)
class Thumb:
    uri: str
    side: int  # pixels of the encoded image (square)


def make_thumb(data: bytes, name: str, max_side: int = THUMB_SIDE) -> Thumb:
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            side = min(min(img.size), max_side)
            square = square_on_white(img, side)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(f"{name} is not a readable image ({exc})") from exc
    buf = io.BytesIO()
    if side <= _PNG_MAX_SIDE:
        square.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        square.save(buf, format="JPEG", quality=88, optimize=True)
        mime = "image/jpeg"
    return Thumb(uri=data_uri(buf.getvalue(), mime), side=side)


def square_on_white(img: Image.Image, side: int) -> Image.Image:
    """What training feeds the model (attribution/images.py to_square_rgb), drawn for people.

    Kept apart from that module because it imports torch, which would triple the
    start-up time of a command that never trains.
    """
    img = ImageOps.exif_transpose(img)
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img, dtype=np.uint32) // 257).astype(np.uint8))
    rgba = img.convert("RGBA")
    img = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    width, height = img.size
    short = min(width, height)
    if width != height:
        left, top = (width - short) // 2, (height - short) // 2
        img = img.crop((left, top, left + short, top + short))
    if short != side:
        img = img.resize((side, side), Image.Resampling.LANCZOS)
    return img


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
