"""Finding the image files a report shows, and checking they are the ones trained on.

The manifest records each image's file name and sha256; the folder comes from run.json
(`input_folders`, absolute) or attribution.json (`images_folder`). An image that has
moved is reported as missing (exit 66); one whose bytes changed is refused (exit 65),
because a report showing a different picture than the one valued would mislead.
Folder metadata (captions, the owner whose style a target is) is optional extra: an
unreadable metadata file only costs the captions.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from royalty.atomic import sha256_file
from royalty.errors import DataError, InputMissingError
from royalty.report.load import ImageRecord

_METADATA = ("metadata.csv", "metadata.jsonl")


@dataclass(frozen=True)
class ImageFolder:
    """One folder of images as a report uses it."""

    root: Path | None  # None: the manifest names no folder
    what: str  # "training image", "target"
    hint: str  # where the folder came from, for messages
    rows: dict[str, dict[str, str]]  # metadata rows by file_name

    def path_of(self, record: ImageRecord) -> Path:
        if self.root is None:
            raise InputMissingError(f"cannot show {self.what} {record.id!r}: {self.hint} names no folder")
        if not self.root.is_dir():
            raise InputMissingError(
                f"the {self.what} folder {self.root} ({self.hint}) does not exist; "
                "run the report where the images are, or restore the folder"
            )
        path = self.root / record.file_name
        if not path.is_file():
            raise InputMissingError(f"{self.what} {record.id!r}: {path} is missing ({self.hint})")
        return path

    def read(self, record: ImageRecord) -> bytes:
        """The image's bytes, refused when they differ from the manifest's sha256."""
        path = self.path_of(record)
        if record.sha256 is not None and sha256_file(path) != record.sha256:
            raise DataError(
                f"{self.what} {record.id!r}: {path} does not match the manifest's sha256 "
                f"({record.sha256[:12]}…): the image changed after the values were computed"
            )
        try:
            return path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def cell(self, record: ImageRecord, column: str) -> str:
        return self.rows.get(record.file_name, {}).get(column, "").strip()


def open_folder(root: Path | None, what: str, hint: str) -> ImageFolder:
    return ImageFolder(root=root, what=what, hint=hint, rows=_metadata_rows(root))


def true_owner(record: ImageRecord, folder: ImageFolder) -> str | None:
    """The owner whose style a single-style target is (manifest first, then metadata)."""
    return record.owner or folder.cell(record, "owner") or None


def _metadata_rows(root: Path | None) -> dict[str, dict[str, str]]:
    if root is None or not root.is_dir():
        return {}
    for name in _METADATA:
        path = root / name
        if path.is_file():
            try:
                rows = _read_jsonl(path) if path.suffix == ".jsonl" else _read_csv(path)
            except (OSError, UnicodeDecodeError, ValueError, csv.Error):
                return {}  # captions are a nicety; the data itself was checked at train time
            return {row["file_name"]: row for row in rows if row.get("file_name")}
    return {}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [{k: v or "" for k, v in row.items() if isinstance(k, str)} for row in csv.DictReader(fh)]


def _read_jsonl(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            record = json.loads(line)
            if isinstance(record, dict):
                rows.append({str(k): v if isinstance(v, str) else "" for k, v in record.items()})
    return rows
