#!/usr/bin/env python3
"""Rebuild ``sample_data/train`` and ``sample_data/targets`` from pinned npm packages.

Each copyright owner is one design house's emoji set. Every owner draws the same
48 training concepts (Unicode codepoints), so only the style differs between
owners. Five further concepts are held out of training entirely; each owner's
rendering of a held-out concept is a single-style target, and four mixed targets
are 50/50 pixel blends of two houses' renderings of one held-out concept.

Sources (exact versions and npm integrity hashes are pinned in ``PACKAGES``):

* ``twemoji``  - Twemoji 64 px PNGs from ``emoji-datasource-twitter`` (CC-BY-4.0)
* ``noto``     - Noto Emoji 64 px PNGs from ``emoji-datasource-google`` (Apache-2.0)
* ``openmoji`` - OpenMoji colour SVGs from ``openmoji`` (CC-BY-SA-4.0)
* ``fluent``   - Fluent Emoji "Flat" SVGs from ``@lobehub/fluent-emoji-flat`` (MIT)

Usage::

    python sample_data/build.py                 # runs `npm pack` into a temp dir
    python sample_data/build.py --source DIR    # DIR holds the `npm pack` .tgz files

Requirements: royalty installed (``royalty.npm_images``), Pillow and ``resvg-py`` (a
self-contained SVG rasterizer wheel, ``pip install resvg-py==0.5.0``); ``npm`` only when
``--source`` is not given.
The output is deterministic: the same inputs and library versions give
byte-identical PNG and CSV files (no PNG metadata chunks, no timestamps).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import shutil
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from royalty.npm_images import fetch_pinned, render_rgba, save_png, to_thumbnail

SIZE = 32  # output width and height in pixels


@dataclass(frozen=True)
class Package:
    """One pinned npm package that provides one owner's images."""

    owner: str
    npm_name: str
    version: str
    integrity: str  # npm `dist.integrity` (sha512, base64)
    tarball: str  # file name that `npm pack` writes
    kind: str  # "png64" (emoji-datasource layout) or "svg"
    license: str  # SPDX id of the artwork
    attribution: str  # template; {name} and {cp} and {author} are filled in


PACKAGES: tuple[Package, ...] = (
    Package(
        owner="fluent",
        npm_name="@lobehub/fluent-emoji-flat",
        version="1.1.0",
        integrity="sha512-lPYCg8+N56MIj+iOgeBeH6AF0tneXxJCvgi41rOTjAWpA5rU2WUcmU1fiIXouEe8GrSTarWCYLY2ML+rdLRHsg==",
        tarball="lobehub-fluent-emoji-flat-1.1.0.tgz",
        kind="svg",
        license="MIT",
        attribution=(
            "Fluent Emoji (Flat) '{name}' ({cp}), Copyright (c) Microsoft Corporation, "
            "MIT License (github.com/microsoft/fluentui-emoji), via npm "
            "@lobehub/fluent-emoji-flat 1.1.0; rasterized, composited on white and "
            "resized to 32x32. See sample_data/LICENSES/MIT-fluent-emoji.txt"
        ),
    ),
    Package(
        owner="noto",
        npm_name="emoji-datasource-google",
        version="16.0.0",
        integrity="sha512-ZRexfzs7MVoLnmzZmNsO4TKhnAJp5D++Vm6PpUpH/jEQQlemp3l88CjZ+DoZ2faM9R4QxZkOPJCoT8DlPhfQ3A==",
        tarball="emoji-datasource-google-16.0.0.tgz",
        kind="png64",
        license="Apache-2.0",
        attribution=(
            "Noto Emoji '{name}' ({cp}), Copyright Google LLC, Apache License 2.0 "
            "(github.com/googlefonts/noto-emoji, v2.048), via npm "
            "emoji-datasource-google 16.0.0; modified: composited on white and "
            "resized to 32x32. See sample_data/LICENSES/Apache-2.0.txt"
        ),
    ),
    Package(
        owner="openmoji",
        npm_name="openmoji",
        version="17.0.0",
        integrity="sha512-EBnYrNGdcdw+OSXmENeNE1yBNRu6tOraTmoOyUbJkTmvT/+XETp8RZLSJFzD3lrPc5N9CzsyPnRTk0Vp4UaI9w==",
        tarball="openmoji-17.0.0.tgz",
        kind="svg",
        license="CC-BY-SA-4.0",
        attribution=(
            "OpenMoji '{name}' ({cp}) by {author}, designed by OpenMoji - the "
            "open-source emoji and icon project (https://openmoji.org), npm openmoji "
            "17.0.0, licensed CC BY-SA 4.0 "
            "(https://creativecommons.org/licenses/by-sa/4.0/); modified: rasterized, "
            "composited on white and resized to 32x32; this derived image is shared "
            "under CC BY-SA 4.0"
        ),
    ),
    Package(
        owner="twemoji",
        npm_name="emoji-datasource-twitter",
        version="16.0.0",
        integrity="sha512-7F+uCuHH+7Qnrc15P5tnbvKkg9E6tlzi4MnT2uW1RlN4pLYTza6cP/dstIfSDMtpjFLWuZewWg8jBbuL2eyELQ==",
        tarball="emoji-datasource-twitter-16.0.0.tgz",
        kind="png64",
        license="CC-BY-4.0",
        attribution=(
            "Twemoji '{name}' ({cp}), Copyright Twitter, Inc. and other contributors "
            "(github.com/jdecked/twemoji, v16.0.1), licensed CC BY 4.0 "
            "(https://creativecommons.org/licenses/by/4.0/), via npm "
            "emoji-datasource-twitter 16.0.0; modified: composited on white and "
            "resized to 32x32"
        ),
    ),
)

# Training concepts: single codepoints (no variation selectors, skin tones, ZWJ
# sequences or flags) that all four sets draw. 12 faces, 12 animals, 12 foods,
# 12 objects / nature.
TRAIN_CONCEPTS: tuple[str, ...] = tuple(
    sorted(
        [
            # faces
            "1f600", "1f602", "1f609", "1f60d", "1f621", "1f622",
            "1f631", "1f634", "1f642", "1f644", "1f914", "1f973",
            # animals
            "1f427", "1f42d", "1f42f", "1f430", "1f431", "1f435",
            "1f436", "1f437", "1f438", "1f43b", "1f43c", "1f981",
            # food
            "1f347", "1f349", "1f34a", "1f34c", "1f34d", "1f352",
            "1f353", "1f354", "1f369", "1f36a", "1f951", "1f955",
            # objects and nature
            "1f308", "1f319", "1f33b", "1f344", "1f381", "1f388",
            "1f3b8", "1f3e0", "1f4a1", "1f511", "1f697", "2b50",
        ]
    )
)

# Held-out target concepts: in no owner's training images.
HELDOUT_CONCEPTS: tuple[str, ...] = tuple(
    sorted(["1f335", "1f355", "1f60e", "1f680", "1f98a"])
)

# Mixed targets: (concept, owner_a, owner_b) with owner_a < owner_b; each image is
# the rounded per-pixel mean of the two owners' 32x32 single-style targets.
MIXES: tuple[tuple[str, str, str], ...] = tuple(
    sorted(
        [
            ("1f355", "openmoji", "twemoji"),
            ("1f60e", "noto", "twemoji"),
            ("1f680", "fluent", "noto"),
            ("1f98a", "fluent", "openmoji"),
        ]
    )
)

TRAIN_COLUMNS = ("file_name", "owner", "sample_id", "caption", "license", "attribution")
TARGET_COLUMNS = ("file_name", "target_id", "owner", "mix", "caption", "license", "attribution")


def fetch_tarballs(source: Path | None, workdir: Path) -> dict[str, Path]:
    """Locate (``--source``) or ``npm pack`` each pinned package; verify integrity."""
    return {pkg.owner: fetch_pinned(pkg.npm_name, pkg.version, pkg.tarball, pkg.integrity, source, workdir) for pkg in PACKAGES}


def read_members(tarball: Path, names: set[str]) -> dict[str, bytes]:
    """Read the named members (paths inside the tarball) into memory."""
    found: dict[str, bytes] = {}
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.name in names and member.isfile():
                handle = tar.extractfile(member)
                assert handle is not None
                found[member.name] = handle.read()
    missing = sorted(names - found.keys())
    if missing:
        sys.exit(f"error: {tarball.name} lacks {missing}")
    return found


def member_path(pkg: Package, concept: str, fluent_names: set[str]) -> str:
    """Path inside ``pkg``'s tarball of the source image for ``concept``."""
    if pkg.owner in ("twemoji", "noto"):
        folder = "twitter" if pkg.owner == "twemoji" else "google"
        return f"package/img/{folder}/64/{concept}.png"
    if pkg.owner == "openmoji":
        return f"package/color/svg/{concept.upper()}.svg"
    if pkg.owner == "fluent":
        for candidate in (f"package/assets/{concept}.svg", f"package/assets/{concept}-fe0f.svg"):
            if candidate in fluent_names:
                return candidate
        sys.exit(f"error: fluent set lacks {concept}")
    raise ValueError(pkg.owner)


def blend(a: Image.Image, b: Image.Image) -> Image.Image:
    """Rounded per-pixel mean of two RGB images (integer arithmetic)."""
    arr = (np.asarray(a, dtype=np.uint16) + np.asarray(b, dtype=np.uint16) + 1) // 2
    return Image.fromarray(arr.astype(np.uint8), mode="RGB")


def write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, str]]) -> None:
    """Write a UTF-8 CSV with '\\n' line endings and a fixed column order."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def load_openmoji_info(tarball: Path) -> dict[str, tuple[str, str]]:
    """Map lowercase hexcode -> (CLDR annotation, OpenMoji author) from openmoji.csv."""
    raw = read_members(tarball, {"package/data/openmoji.csv"})["package/data/openmoji.csv"]
    info: dict[str, tuple[str, str]] = {}
    for row in csv.DictReader(io.StringIO(raw.decode("utf-8"))):
        info[row["hexcode"].lower()] = (row["annotation"], row["openmoji_author"])
    return info


def check_datasource(tarball: Path, concepts: list[str], flag: str) -> None:
    """Check emoji-datasource's emoji.json says it has a real image for each concept."""
    raw = read_members(tarball, {"package/emoji.json"})["package/emoji.json"]
    by_cp = {entry["unified"].lower(): entry for entry in json.loads(raw)}
    for concept in concepts:
        entry = by_cp.get(concept)
        if entry is None or not entry.get(flag) or entry.get("image") != f"{concept}.png":
            sys.exit(f"error: {tarball.name} has no own image for {concept}")


def build(out: Path, source: Path | None) -> None:
    overlap = set(TRAIN_CONCEPTS) & set(HELDOUT_CONCEPTS)
    if overlap:
        sys.exit(f"error: held-out concepts also in training: {sorted(overlap)}")
    concepts = sorted(set(TRAIN_CONCEPTS) | set(HELDOUT_CONCEPTS))

    with tempfile.TemporaryDirectory() as tmp:
        tarballs = fetch_tarballs(source, Path(tmp))
        openmoji_info = load_openmoji_info(tarballs["openmoji"])
        check_datasource(tarballs["twemoji"], concepts, "has_img_twitter")
        check_datasource(tarballs["noto"], concepts, "has_img_google")
        with tarfile.open(tarballs["fluent"], "r:gz") as tar:
            fluent_names = set(tar.getnames())

        thumbs: dict[tuple[str, str], Image.Image] = {}
        for pkg in PACKAGES:
            paths = {c: member_path(pkg, c, fluent_names) for c in concepts}
            data = read_members(tarballs[pkg.owner], set(paths.values()))
            for concept in concepts:
                thumbs[(pkg.owner, concept)] = to_thumbnail(render_rgba(data[paths[concept]], pkg.kind), SIZE)

    def caption(concept: str) -> str:
        return openmoji_info[concept][0]

    def attribution(pkg: Package, concept: str) -> str:
        return pkg.attribution.format(
            name=caption(concept), cp=f"U+{concept.upper()}", author=openmoji_info[concept][1]
        )

    train_dir, target_dir = out / "train", out / "targets"
    for folder in (train_dir, target_dir):
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)

    train_rows: list[dict[str, str]] = []
    for pkg in PACKAGES:
        for concept in TRAIN_CONCEPTS:
            file_name = f"{pkg.owner}/{concept}.png"
            save_png(thumbs[(pkg.owner, concept)], train_dir / file_name)
            train_rows.append(
                {
                    "file_name": file_name,
                    "owner": pkg.owner,
                    "sample_id": f"{pkg.owner}/{concept}",
                    "caption": caption(concept),
                    "license": pkg.license,
                    "attribution": attribution(pkg, concept),
                }
            )
    write_csv(train_dir / "metadata.csv", TRAIN_COLUMNS, train_rows)

    by_owner = {pkg.owner: pkg for pkg in PACKAGES}
    target_rows: list[dict[str, str]] = []
    for pkg in PACKAGES:
        for concept in HELDOUT_CONCEPTS:
            target_id = f"{pkg.owner}-{concept}"
            save_png(thumbs[(pkg.owner, concept)], target_dir / f"{target_id}.png")
            target_rows.append(
                {
                    "file_name": f"{target_id}.png",
                    "target_id": target_id,
                    "owner": pkg.owner,
                    "mix": "",
                    "caption": caption(concept),
                    "license": pkg.license,
                    "attribution": attribution(pkg, concept),
                }
            )
    for concept, owner_a, owner_b in MIXES:
        target_id = f"mix-{owner_a}-{owner_b}-{concept}"
        save_png(blend(thumbs[(owner_a, concept)], thumbs[(owner_b, concept)]), target_dir / f"{target_id}.png")
        pkg_a, pkg_b = by_owner[owner_a], by_owner[owner_b]
        target_rows.append(
            {
                "file_name": f"{target_id}.png",
                "target_id": target_id,
                "owner": "",
                "mix": f"{owner_a}+{owner_b}",
                "caption": caption(concept),
                "license": f"{pkg_a.license} AND {pkg_b.license}",
                "attribution": "50/50 pixel blend of: "
                + attribution(pkg_a, concept)
                + " | AND | "
                + attribution(pkg_b, concept),
            }
        )
    write_csv(target_dir / "metadata.csv", TARGET_COLUMNS, target_rows)
    print(f"wrote {len(train_rows)} training images and {len(target_rows)} targets under {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=None,
        help="folder holding the `npm pack` tarballs; default: run `npm pack` into a temp dir",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output folder (train/ and targets/ inside it are replaced); default: this script's folder",
    )
    args = parser.parse_args(argv)
    build(args.out, args.source)


if __name__ == "__main__":
    main()
