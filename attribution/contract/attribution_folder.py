"""RUN/attributions/NAME/: where `royalty attribute` puts values for new targets.

Kept free of torch so `royalty payout` and `royalty report` read attributions fast.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from royalty.atomic import sha256_file
from royalty.attribution.contract import run_folder
from royalty.errors import DataError, InputMissingError, UsageError

ATTRIBUTIONS_DIR = "attributions"
MANIFEST = "attribution.json"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def attribution_dir(run: Path, name: str) -> Path:
    if not NAME_PATTERN.match(name):
        raise UsageError(f"{name!r} cannot name an attribution: use letters, digits, '.', '_' and '-' (at most 100)")
    return Path(run) / ATTRIBUTIONS_DIR / name


def list_attributions(run: Path) -> list[str]:
    root = Path(run) / ATTRIBUTIONS_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


def read_attribution(run: Path, run_manifest: dict[str, Any], name: str) -> tuple[Path, dict[str, Any], str]:
    """(folder, attribution.json, sha256 of its values): checked to belong to this run, values verified."""
    folder = attribution_dir(run, name)
    path = folder / MANIFEST
    if not path.is_file():
        known = list_attributions(run)
        hint = f"known: {', '.join(known)}" if known else "the run has none (make one with `royalty attribute`)"
        raise InputMissingError(f"no attribution {name!r} in {run}: {path} is missing; {hint}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format_version") != run_folder.FORMAT_VERSION:
        raise DataError(f"{path} is not a royalty attribution manifest of format_version {run_folder.FORMAT_VERSION}")
    if doc.get("run_id") != run_manifest.get("run_id"):
        raise DataError(
            f"{path} belongs to run {doc.get('run_id')!r}, not to this run ({run_manifest.get('run_id')!r}): "
            "it was copied from another run folder"
        )
    values = folder / run_folder.VALUES
    if not values.is_file():
        raise InputMissingError(f"{values} is missing")
    recorded, actual = (doc.get("outputs") or {}).get(run_folder.VALUES), sha256_file(values)
    if recorded != actual:
        raise DataError(
            f"{values} does not match {MANIFEST} (sha256 {actual[:12]}…, recorded {str(recorded)[:12]}…): "
            "the attribution was modified after it was computed"
        )
    return folder, doc, actual
