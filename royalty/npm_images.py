"""Small RGB images from pinned npm packages: what `sample_data/build.py` and `base/build.py` share.

Both build their images the same way — `npm pack` a pinned package (or read it from a
folder), check its sha512 against the pin, rasterize each source image (resvg for SVG),
composite it on white and downscale it with Lanczos — so the base is drawn exactly like the
owners' images it is fine-tuned on. `resvg-py` is imported only when an SVG is rendered.
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
from pathlib import Path

from PIL import Image

SVG_RENDER_SIZE = 256  # SVGs are rasterized at this size, then downscaled


def sha512_integrity(path: Path) -> str:
    """The npm-style ``sha512-<base64>`` integrity string of a file."""
    return "sha512-" + base64.b64encode(hashlib.sha512(path.read_bytes()).digest()).decode("ascii")


def fetch_pinned(npm_name: str, version: str, tarball: str, integrity: str, source: Path | None, workdir: Path) -> Path:
    """The package's tarball, from `source` or `npm pack` into `workdir`; exits unless its sha512 is the pin."""
    if source is not None:
        path = source / tarball
        if not path.is_file():
            sys.exit(f"error: {path} not found (run: npm pack {npm_name}@{version})")
    else:
        result = subprocess.run(["npm", "pack", f"{npm_name}@{version}", "--pack-destination", str(workdir)], capture_output=True, text=True)
        if result.returncode != 0:
            sys.exit(f"error: npm pack {npm_name}@{version} failed:\n{result.stderr}")
        path = workdir / tarball
    got = sha512_integrity(path)
    if got != integrity:
        sys.exit(f"error: {path} integrity {got} != pinned {integrity}")
    return path


def render_rgba(data: bytes, kind: str) -> Image.Image:
    """Decode a source image (PNG bytes, or SVG rasterized by resvg) to RGBA."""
    if kind == "svg":
        import resvg_py  # imported lazily so the scripts' --help works without it

        data = bytes(resvg_py.svg_to_bytes(svg_string=data.decode("utf-8"), width=SVG_RENDER_SIZE, height=SVG_RENDER_SIZE))
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGBA")


def to_thumbnail(rgba: Image.Image, size: int) -> Image.Image:
    """Composite on white, then downscale to size x size RGB with Lanczos."""
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB").resize((size, size), Image.Resampling.LANCZOS)


def save_png(image: Image.Image, path: Path) -> None:
    """Write a PNG with no metadata chunks (deterministic bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = Image.frombytes("RGB", image.size, image.tobytes())  # drops image.info
    clean.save(path, format="PNG", optimize=False)
