"""Reading the image folders `royalty train` takes (docs/design.md §4), validating them first.

Three kinds of folder, one pipeline:

- the training data folder: images plus `metadata.csv` or `metadata.jsonl` listing each
  image's `file_name` and `owner` (optional `sample_id`, `caption`, `license`, any extra);
- the targets folder and the reference folder: images, metadata optional (`file_name`,
  optional `target_id`, optional `owner`); without metadata every image file counts.

Every metadata check runs before any image is decoded, so a bad row fails in
milliseconds, and every error names the file and row. One image listed twice in the
training data (the same file, or byte-identical copies) is refused: under two owners
always, since both would be paid for it; under one owner unless the caller allows it
(`royalty train --allow-duplicates`). Metadata rows are numbered as metadata.py says.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

import pandas as pd
import torch

from royalty.attribution.data.metadata import Metadata, read_metadata, require_columns
from royalty.attribution.data.images import IMAGE_EXTENSIONS, ImageDecodeError, decode_image, list_image_files
from royalty.errors import DataError, InputMissingError, UsageError

# "C:\x", "C:x" and "\\server\x" name files outside the folder when the tool runs on
# Windows; reject them everywhere so a data set means the same on every machine.
_WINDOWS_ABSOLUTE = re.compile(r"^(?:[\\/]|[A-Za-z]:)")


@dataclass(frozen=True, eq=False)  # eq=False: comparing tensors/frames field-wise is meaningless
class ImageTable:
    """One loaded folder; every tuple, `extra` and `images` share the same item order."""

    root: Path
    ids: tuple[str, ...]
    file_names: tuple[str, ...]
    owners: tuple[str, ...]
    sha256: tuple[str, ...]
    extra: pd.DataFrame
    images: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class _Item:
    """One validated entry, ready to decode."""

    where: str  # how messages name it, e.g. "/d/metadata.csv row 7 (file_name 'a.png')"
    short: str  # the same within its own folder, e.g. "row 7 (file_name 'a.png')"
    path: Path
    file_name: str
    id: str
    owner: str


class Duplicates(Enum):
    """What `load_training_data` does with one image listed more than once."""

    REFUSE = "refuse"  # `royalty train`'s default
    ALLOW_SAME_OWNER = "allow-same-owner"  # --allow-duplicates; two owners are still refused
    # a recorded run read back (replay, audit): its inputs are checked against run.json's
    # sha256 instead, and a run trained before this check existed stays readable
    UNCHECKED = "unchecked"

    @classmethod
    def for_training(cls, allow_duplicates: bool) -> Duplicates:
        return cls.ALLOW_SAME_OWNER if allow_duplicates else cls.REFUSE


# Duplicate groups an error lists before it says how many more there are.
_SHOWN_DUPLICATES = 5

# ---------------------------------------------------------------------------- public API


def load_training_data(folder: Path, resolution: int, *, duplicates: Duplicates = Duplicates.REFUSE) -> ImageTable:
    """Validate and load an owner-tagged training data folder.

    The same image twice, by resolved file path (before any image is decoded) or by
    the sha256 of its bytes (the manifest's, computed while loading), is a DataError
    naming the rows, as `duplicates` says.
    """
    _check_resolution(resolution)
    root = _existing_folder(folder, "data folder")
    meta = read_metadata(root)
    if meta is None:
        raise DataError(
            f"data folder {root} has no metadata.csv or metadata.jsonl; "
            "it must list each image's file_name and owner"
        )
    if len(meta.frame) == 0:
        raise DataError(f"{meta.path} has no rows: the data folder {root} is empty")
    require_columns(meta, ("file_name", "owner"))
    items = [_training_item(root, meta, i) for i in range(len(meta.frame))]
    _check_unique_ids(items, "sample_id")
    if duplicates is not Duplicates.UNCHECKED:
        _check_duplicates(meta.path, items, [item.path.resolve() for item in items], "the same file", duplicates)
    table = _load(root, items, meta.frame, resolution)
    if duplicates is not Duplicates.UNCHECKED:
        _check_duplicates(meta.path, items, table.sha256, "byte-identical files", duplicates)
    return table


def load_targets(folder: Path, resolution: int, *, what: str = "targets") -> ImageTable:
    """Validate and load a targets folder (or, with what="reference", the reference set).

    Ids come from `target_id`, else the file_name without its extension ("cats/tabby.png"
    -> "cats/tabby"). Owners are "" unless the metadata names one.
    """
    _check_resolution(resolution)
    root = _existing_folder(folder, f"{what} folder")
    meta = read_metadata(root)
    if meta is None:
        items, extra = _unlisted_target_items(root, what)
    else:
        if len(meta.frame) == 0:
            raise DataError(f"no {_plural(what)}: {meta.path} has no rows")
        require_columns(meta, ("file_name",))
        items = [_target_item(root, meta, i) for i in range(len(meta.frame))]
        extra = meta.frame
    _check_unique_ids(items, "target_id")
    return _load(root, items, extra, resolution)


def inputs_manifest(table: ImageTable) -> list[dict]:
    """The per-image records run.json keeps so an auditor can check the exact inputs."""
    return [
        {"id": id_, "file_name": name, "owner": owner, "sha256": digest}
        for id_, name, owner, digest in zip(table.ids, table.file_names, table.owners, table.sha256)
    ]


# ------------------------------------------------------------------------ folder checks


def _check_resolution(resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
        raise UsageError(f"resolution must be a positive integer, got {resolution!r}")


def _existing_folder(folder: Path, label: str) -> Path:
    root = Path(folder)
    if not root.exists():
        raise InputMissingError(f"{label} {root} does not exist")
    if not root.is_dir():
        raise InputMissingError(f"{label} {root} is not a folder")
    return root


def _plural(what: str) -> str:
    return what if what.endswith("s") else f"{what} images"


# --------------------------------------------------------------------- metadata reading


def _training_item(root: Path, meta: Metadata, i: int) -> _Item:
    where = meta.where(i)
    file_name = _required_file_name(meta, i)
    owner = meta.cell(i, "owner")
    if not owner.strip():
        raise DataError(f"{where}: owner is empty; every training image needs an owner")
    _check_no_padding(where, "owner", owner)
    sample_id = meta.cell(i, "sample_id") or file_name
    _check_no_padding(where, "sample_id", sample_id)
    path = _resolve_inside(root, file_name, where)
    return _Item(where, meta.short(i), path, file_name, sample_id, owner)


def _target_item(root: Path, meta: Metadata, i: int) -> _Item:
    where = meta.where(i)
    file_name = _required_file_name(meta, i)
    owner = meta.cell(i, "owner")
    if owner and not owner.strip():
        raise DataError(f"{where}: owner is only whitespace; leave it empty for a mixed target")
    _check_no_padding(where, "owner", owner)
    target_id = meta.cell(i, "target_id") or _id_from_file_name(file_name)
    _check_no_padding(where, "target_id", target_id)
    path = _resolve_inside(root, file_name, where)
    return _Item(where, meta.short(i), path, file_name, target_id, owner)


def _unlisted_target_items(root: Path, what: str) -> tuple[list[_Item], pd.DataFrame]:
    file_names = list_image_files(root)
    if not file_names:
        extensions = ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))
        raise DataError(f"no {_plural(what)}: {root} holds no image files ({extensions}) and no metadata")
    items = []
    for file_name in file_names:
        where = f"{what} file {file_name!r} in {root}"
        path = _resolve_inside(root, file_name, where)
        items.append(_Item(where, f"file {file_name!r}", path, file_name, _id_from_file_name(file_name), ""))
    return items, pd.DataFrame({"file_name": file_names}, dtype=str)


def _required_file_name(meta: Metadata, i: int) -> str:
    file_name = meta.cell(i, "file_name")
    if not file_name.strip():
        raise DataError(f"{meta.where(i)}: file_name is empty")
    return file_name


def _id_from_file_name(file_name: str) -> str:
    path = PurePosixPath(file_name)
    return str(path.with_suffix("")) if path.suffix else str(path)


def _check_no_padding(where: str, column: str, value: str) -> None:
    # "alice" and "alice " would silently become two owners (or two ids) and split a payout.
    if value != value.strip():
        raise DataError(f"{where}: {column} {value!r} has leading or trailing whitespace")


def _resolve_inside(root: Path, file_name: str, where: str) -> Path:
    """The file a row names, after checking it stays inside `root` and is a file."""
    if PurePosixPath(file_name).is_absolute() or _WINDOWS_ABSOLUTE.match(file_name):
        raise DataError(f"{where}: file_name is an absolute path; it must be a path inside {root}")
    if ".." in PurePosixPath(file_name.replace("\\", "/")).parts:
        raise DataError(f"{where}: file_name contains '..'; it must stay inside {root}")
    path = root / file_name
    try:
        real = path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop
        raise DataError(f"{where}: cannot resolve {path}: {exc}") from exc
    if not real.is_relative_to(root.resolve()):
        raise DataError(f"{where}: {path} is a symlink to {real}, which leaves the folder {root}")
    if not path.exists():
        raise DataError(f"{where}: file {path} does not exist")
    if not path.is_file():
        raise DataError(f"{where}: {path} is not a file")
    return path


def _check_unique_ids(items: Sequence[_Item], column: str) -> None:
    first: dict[str, _Item] = {}
    for item in items:
        if item.id in first:
            hint = "; give each a distinct target_id in metadata.csv" if column == "target_id" else ""
            raise DataError(
                f"{item.where}: duplicate {column} {item.id!r} (already used by {first[item.id].short}){hint}"
            )
        first[item.id] = item


def _check_duplicates(
    listing: Path, items: Sequence[_Item], keys: Sequence[object], how: str, duplicates: Duplicates
) -> None:
    """Refuse rows whose `keys` (resolved paths, or content hashes) repeat, as `duplicates` says."""
    groups: dict[object, list[_Item]] = {}
    for item, key in zip(items, keys):
        groups.setdefault(key, []).append(item)
    repeated = [(key, group) for key, group in groups.items() if len(group) > 1]
    owners = [(key, group) for key, group in repeated if len({item.owner for item in group}) > 1]
    if owners:
        raise DataError(
            f"{listing} lists one image under more than one owner, and each owner would be paid for it:\n"
            + _describe_groups(owners, how)
            + "\nlist each image once, under the owner who holds its copyright"
        )
    if repeated and duplicates is Duplicates.REFUSE:
        raise DataError(
            f"{listing} lists the same image more than once, so its owner would be paid for it more than once:\n"
            + _describe_groups(repeated, how)
            + "\nremove the repeated rows, or pass --allow-duplicates to train on every row as listed"
        )


def _describe_groups(groups: Sequence[tuple[object, list[_Item]]], how: str) -> str:
    lines = []
    for key, group in groups[:_SHOWN_DUPLICATES]:
        what = f"{how} {key}" if isinstance(key, Path) else f"{how} (sha256 {str(key)[:12]}…)"
        rows = "; ".join(f"{item.short}, sample_id {item.id!r}, owner {item.owner!r}" for item in group)
        lines.append(f"  {what}: {rows}")
    if len(groups) > _SHOWN_DUPLICATES:
        lines.append(f"  … and {len(groups) - _SHOWN_DUPLICATES} more such image(s)")
    return "\n".join(lines)


# ----------------------------------------------------------------------- decoding


def _load(root: Path, items: Sequence[_Item], extra: pd.DataFrame, resolution: int) -> ImageTable:
    images = torch.empty((len(items), 3, resolution, resolution), dtype=torch.float32)
    digests = []
    for index, item in enumerate(items):
        try:
            data = item.path.read_bytes()
        except OSError as exc:
            raise DataError(f"{item.where}: cannot read {item.path}: {exc.strerror or exc}") from exc
        # Hash the very bytes that are decoded, so the manifest names what was trained on.
        digests.append(hashlib.sha256(data).hexdigest())
        try:
            images[index] = decode_image(data, resolution)
        except ImageDecodeError as exc:
            raise DataError(f"{item.where}: {item.path} is not a readable image ({exc})") from exc
    return ImageTable(
        root=root,
        ids=tuple(item.id for item in items),
        file_names=tuple(item.file_name for item in items),
        owners=tuple(item.owner for item in items),
        sha256=tuple(digests),
        extra=extra.reset_index(drop=True),
        images=images,
    )
