"""royalty.npm_images: the pinned-package fetch and the thumbnail both dataset builds share."""

from __future__ import annotations

import base64
import hashlib
import io

import numpy as np
import pytest
from PIL import Image

from royalty.npm_images import fetch_pinned, render_rgba, save_png, sha512_integrity, to_thumbnail


def test_integrity_is_npm_sha512_and_a_wrong_pin_is_refused(tmp_path):
    tarball = tmp_path / "pkg-1.0.0.tgz"
    tarball.write_bytes(b"not really a tarball")
    pin = "sha512-" + base64.b64encode(hashlib.sha512(b"not really a tarball").digest()).decode()
    assert sha512_integrity(tarball) == pin
    assert fetch_pinned("pkg", "1.0.0", tarball.name, pin, tmp_path, tmp_path) == tarball
    with pytest.raises(SystemExit, match="integrity .* != pinned"):
        fetch_pinned("pkg", "1.0.0", tarball.name, "sha512-AAAA", tmp_path, tmp_path)
    with pytest.raises(SystemExit, match="not found .*npm pack pkg@2.0.0"):
        fetch_pinned("pkg", "2.0.0", "pkg-2.0.0.tgz", pin, tmp_path, tmp_path)


def test_thumbnail_composites_on_white_and_saves_the_same_bytes_every_time(tmp_path):
    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[:32, :, :] = (200, 10, 10, 255)  # opaque red top half; the bottom half is transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    thumb = to_thumbnail(render_rgba(buf.getvalue(), "png"), 16)
    arr = np.asarray(thumb)
    assert thumb.mode == "RGB" and arr.shape == (16, 16, 3)
    assert (arr[:4] == (200, 10, 10)).all() and (arr[-4:] == 255).all()  # away from the edge Lanczos blurs; transparent became white
    thumb.info["note"] = "dropped"
    save_png(thumb, tmp_path / "a" / "x.png")
    save_png(to_thumbnail(render_rgba(buf.getvalue(), "png"), 16), tmp_path / "b" / "x.png")
    assert (tmp_path / "a" / "x.png").read_bytes() == (tmp_path / "b" / "x.png").read_bytes()
