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

from PIL import Image, UnidentifiedImageError

from royalty.attribution.data.square import to_square_rgb
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
            square = to_square_rgb(img, side)
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


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
