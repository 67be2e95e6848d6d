"""Reading the data, targets and reference folders: happy paths, pixels, and every bad input."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from royalty.atomic import sha256_file
from royalty.attribution.training.config import TrainConfig
from royalty.attribution.data.folders import Duplicates, ImageTable, inputs_manifest, load_targets, load_training_data
from royalty.errors import DataError, InputMissingError, UsageError

R = 8


# ------------------------------------------------------------------------------ helpers


def png(path: Path, color=(200, 30, 30, 255), size=(R, R)) -> Path:
    """Write a solid image; the format follows the suffix (JPEG has no alpha)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.new("RGBA", size, color)
    (img.convert("RGB") if path.suffix.lower() in (".jpg", ".jpeg") else img).save(path)
    return path


def write_csv(folder: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    lines = [",".join(columns)] + [",".join(row.get(c, "") for c in columns) for row in rows]
    path = folder / "metadata.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "metadata.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A valid training folder with three images, one in a subfolder."""
    folder = tmp_path / "train"
    png(folder / "a.png", (255, 0, 0, 255))
    png(folder / "b.png", (0, 255, 0, 255))
    png(folder / "sub" / "c.png", (0, 0, 255, 255))
    return folder


def rows3() -> list[dict]:
    return [
        {"file_name": "a.png", "owner": "alice", "sample_id": "007", "license": "CC-BY-4.0"},
        {"file_name": "b.png", "owner": "bob", "sample_id": "008", "license": "MIT"},
        {"file_name": "sub/c.png", "owner": "alice", "sample_id": "009", "license": "MIT"},
    ]


def error(exc_type, fn, *args, **kwargs) -> str:
    with pytest.raises(exc_type) as info:
        fn(*args, **kwargs)
    return str(info.value)


# --------------------------------------------------------------------- training: happy


def test_csv_happy_path(data: Path) -> None:
    write_csv(data, [dict(r, attribution="x") for r in rows3()])
    table = load_training_data(data, R)
    assert isinstance(table, ImageTable)
    assert table.root == data
    assert table.ids == ("007", "008", "009")  # stays a string, leading zeros kept
    assert table.file_names == ("a.png", "b.png", "sub/c.png")
    assert table.owners == ("alice", "bob", "alice")
    assert table.images.shape == (3, 3, R, R) and table.images.dtype == torch.float32
    assert list(table.extra.columns) == ["file_name", "owner", "sample_id", "license", "attribution"]
    assert list(table.extra["license"]) == ["CC-BY-4.0", "MIT", "MIT"]
    assert len(table) == 3
    # Pure red, green, blue at the right rows and channels.
    assert torch.equal(table.images[0, :, 0, 0], torch.tensor([1.0, -1.0, -1.0]))
    assert torch.equal(table.images[2, :, 0, 0], torch.tensor([-1.0, -1.0, 1.0]))


def test_jsonl_happy_path_and_scalar_cells(data: Path) -> None:
    rows = rows3()
    rows[0]["sample_id"] = 7  # a JSON number id becomes the string "7"
    rows[1]["caption"] = None  # null becomes ""
    rows[2]["tags"] = ["x", "y"]  # extra non-scalar columns are kept as JSON text
    write_jsonl(data, rows)
    table = load_training_data(data, R)
    assert table.ids == ("7", "008", "009")
    assert table.extra.loc[1, "caption"] == ""
    assert table.extra.loc[0, "caption"] == ""  # missing key -> ""
    assert json.loads(table.extra.loc[2, "tags"]) == ["x", "y"]


def test_csv_and_jsonl_give_the_same_table(tmp_path: Path) -> None:
    tables = []
    for kind, writer in (("csv", write_csv), ("jsonl", write_jsonl)):
        folder = tmp_path / kind
        for i, r in enumerate(rows3()):
            png(folder / r["file_name"], (10 * i, 0, 0, 255))  # distinct: one image twice is refused
        writer(folder, rows3())
        tables.append(load_training_data(folder, R))
    a, b = tables
    assert (a.ids, a.file_names, a.owners, a.sha256) == (b.ids, b.file_names, b.owners, b.sha256)
    assert torch.equal(a.images, b.images)
    pd.testing.assert_frame_equal(a.extra, b.extra)


def test_sample_id_defaults_to_file_name(data: Path) -> None:
    rows = [{"file_name": r["file_name"], "owner": r["owner"]} for r in rows3()]
    write_csv(data, rows)
    assert load_training_data(data, R).ids == ("a.png", "b.png", "sub/c.png")


def test_empty_sample_id_cell_defaults_to_file_name(data: Path) -> None:
    rows = rows3()
    rows[1]["sample_id"] = ""
    write_csv(data, rows)
    assert load_training_data(data, R).ids == ("007", "b.png", "009")


def test_order_is_metadata_order(data: Path) -> None:
    write_csv(data, list(reversed(rows3())))
    assert load_training_data(data, R).file_names == ("sub/c.png", "b.png", "a.png")


def test_blank_lines_are_skipped_but_counted(data: Path) -> None:
    path = data / "metadata.csv"
    path.write_text("file_name,owner\na.png,alice\n\nb.png,\n\n", encoding="utf-8")
    # The bad row is the third record after the header (the blank record counts).
    assert "metadata.csv row 3 (file_name 'b.png')" in error(DataError, load_training_data, data, R)
    path.write_text("file_name,owner\na.png,alice\n\nb.png,bob\n\n", encoding="utf-8")
    assert load_training_data(data, R).ids == ("a.png", "b.png")


def test_byte_order_mark_and_na_strings(data: Path) -> None:
    (data / "metadata.csv").write_text("\ufefffile_name,owner\na.png,NA\nb.png,null\n", encoding="utf-8")
    assert load_training_data(data, R).owners == ("NA", "null")


def test_sha256_and_manifest(data: Path) -> None:
    write_csv(data, rows3())
    table = load_training_data(data, R)
    digests = [sha256_file(data / r["file_name"]) for r in rows3()]
    assert table.sha256 == tuple(digests)
    assert inputs_manifest(table) == [
        {"id": r["sample_id"], "file_name": r["file_name"], "owner": r["owner"], "sha256": digest}
        for r, digest in zip(rows3(), digests)
    ]
    json.dumps(inputs_manifest(table))  # run.json must be able to hold it


def test_unlisted_images_are_ignored(data: Path) -> None:
    write_csv(data, rows3()[:2])
    assert load_training_data(data, R).file_names == ("a.png", "b.png")


# -------------------------------------------------------------------------- pixels


def test_transparent_pixel_becomes_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (R, R), (255, 0, 0, 255))
    img.putpixel((0, 0), (0, 0, 0, 0))  # fully transparent black
    img.putpixel((1, 0), (0, 0, 0, 128))  # half-transparent black -> mid grey
    img.save(tmp_path / "t.png")
    table = load_targets(tmp_path, R)
    assert torch.equal(table.images[0, :, 0, 0], torch.ones(3))
    assert torch.allclose(table.images[0, :, 0, 1], torch.full((3,), 127 / 127.5 - 1), atol=0.01)
    assert torch.equal(table.images[0, :, 4, 4], torch.tensor([1.0, -1.0, -1.0]))


def test_palette_transparency_becomes_white(tmp_path: Path) -> None:
    img = Image.new("P", (R, R), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    assert torch.equal(load_targets(tmp_path, R).images, torch.ones(1, 3, R, R))


def test_grey_and_16_bit_images(tmp_path: Path) -> None:
    Image.new("L", (R, R), 0).save(tmp_path / "a_grey.png")
    Image.fromarray(np.full((R, R), 65535, dtype=np.uint16)).save(tmp_path / "b_16bit.png")
    images = load_targets(tmp_path, R).images
    assert torch.equal(images[0], -torch.ones(3, R, R))
    assert torch.equal(images[1], torch.ones(3, R, R))


def test_center_crop_and_resize(tmp_path: Path) -> None:
    # 30x10: red | green | blue thirds; the centre square is the green third.
    img = Image.new("RGB", (30, 10), (255, 0, 0))
    img.paste((0, 255, 0), (10, 0, 20, 10))
    img.paste((0, 0, 255), (20, 0, 30, 10))
    img.save(tmp_path / "wide.png")
    Image.new("RGB", (10, 40), (0, 255, 0)).save(tmp_path / "tall.jpg", quality=100)
    images = load_targets(tmp_path, 4).images
    assert images.shape == (2, 3, 4, 4)
    assert torch.allclose(images[1], torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 4, 4), atol=0.02)
    assert torch.allclose(images[0, :, 1:3, 1:3].mean((1, 2)), torch.tensor([-1.0, 1.0, -1.0]), atol=0.05)


def test_value_range_and_determinism(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (13, 17, 4), dtype=np.uint8), "RGBA").save(tmp_path / f"n{i}.png")
    first, second = load_targets(tmp_path, 6), load_targets(tmp_path, 6)
    assert torch.equal(first.images, second.images)
    assert first.images.min() >= -1.0 and first.images.max() <= 1.0
    assert first.images.std() > 0.1  # not collapsed to a constant


def test_no_resize_keeps_exact_pixels(tmp_path: Path) -> None:
    pixels = np.random.default_rng(1).integers(0, 256, (R, R, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").save(tmp_path / "x.png")
    expected = torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)
    assert torch.equal(load_targets(tmp_path, R).images[0], expected)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 10))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the blue half ends up on top
    img.save(tmp_path / "r.jpg", exif=exif, quality=100)
    images = load_targets(tmp_path, 10).images
    top, bottom = images[0, :, 1, 5], images[0, :, 8, 5]
    assert top[2] > 0.8 and bottom[0] > 0.8


# -------------------------------------------------------------------------- targets


def test_targets_without_metadata(tmp_path: Path) -> None:
    png(tmp_path / "b.png")
    png(tmp_path / "a.PNG")
    png(tmp_path / "sub" / "c.webp")
    png(tmp_path / ".hidden" / "d.png")
    (tmp_path / "README.txt").write_text("not an image")
    table = load_targets(tmp_path, R)
    assert table.file_names == ("a.PNG", "b.png", "sub/c.webp")
    assert table.ids == ("a", "b", "sub/c")
    assert table.owners == ("", "", "")
    assert list(table.extra.columns) == ["file_name"]
    assert list(table.extra["file_name"]) == list(table.file_names)


def test_targets_with_metadata(tmp_path: Path) -> None:
    for name in ("x.png", "y.png", "z.png", "unlisted.png"):
        png(tmp_path / name)
    write_csv(
        tmp_path,
        [
            {"file_name": "y.png", "target_id": "cat-1", "owner": "alice", "concept": "cat"},
            {"file_name": "x.png", "target_id": "", "owner": "", "concept": "mixed"},
            {"file_name": "z.png", "target_id": "007", "owner": "bob", "concept": "dog"},
        ],
    )
    table = load_targets(tmp_path, R)
    assert table.ids == ("cat-1", "x", "007")
    assert table.owners == ("alice", "", "bob")
    assert list(table.extra["concept"]) == ["cat", "mixed", "dog"]


def test_targets_metadata_without_id_or_owner_columns(tmp_path: Path) -> None:
    png(tmp_path / "sub" / "q.png")
    write_jsonl(tmp_path, [{"file_name": "sub/q.png"}])
    table = load_targets(tmp_path, R)
    assert (table.ids, table.owners) == (("sub/q",), ("",))


def test_reference_uses_its_name_in_messages(tmp_path: Path) -> None:
    assert "reference folder" in error(InputMissingError, load_targets, tmp_path / "nope", R, what="reference")
    assert "no reference images" in error(DataError, load_targets, tmp_path, R, what="reference")
    png(tmp_path / "r.png")
    assert load_targets(tmp_path, R, what="reference").ids == ("r",)


# ------------------------------------------------------------------ training: bad input


def test_resolution_must_be_positive(data: Path) -> None:
    write_csv(data, rows3())
    for bad in (0, -3, 2.5, True):
        assert "resolution" in error(UsageError, load_training_data, data, bad)
        assert "resolution" in error(UsageError, load_targets, data, bad)


def test_missing_folder(tmp_path: Path) -> None:
    msg = error(InputMissingError, load_training_data, tmp_path / "nope", R)
    assert "data folder" in msg and "nope" in msg and "does not exist" in msg
    assert "targets folder" in error(InputMissingError, load_targets, tmp_path / "nope", R)
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in error(InputMissingError, load_training_data, tmp_path / "file", R)


def test_no_metadata(data: Path) -> None:
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv or metadata.jsonl" in msg and str(data) in msg


def test_both_metadata_files(data: Path) -> None:
    write_csv(data, rows3())
    write_jsonl(data, rows3())
    msg = error(DataError, load_training_data, data, R)
    assert "both metadata.csv and metadata.jsonl" in msg
    assert "both" in error(DataError, load_targets, data, R)


@pytest.mark.parametrize("content", ["", "file_name,owner\n", "file_name,owner\n\n,\n"])
def test_empty_csv_metadata(data: Path, content: str) -> None:
    (data / "metadata.csv").write_text(content)
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv has no rows" in msg and "empty" in msg


def test_empty_jsonl_metadata(data: Path) -> None:
    (data / "metadata.jsonl").write_text("\n  \n")
    assert "metadata.jsonl has no rows" in error(DataError, load_training_data, data, R)


@pytest.mark.parametrize("missing", ["file_name", "owner"])
def test_missing_required_column(data: Path, missing: str) -> None:
    write_csv(data, [{k: v for k, v in r.items() if k != missing} for r in rows3()])
    msg = error(DataError, load_training_data, data, R)
    assert f"has no '{missing}' column" in msg and "metadata.csv" in msg and "columns found" in msg


def test_jsonl_objects_without_keys(data: Path) -> None:
    (data / "metadata.jsonl").write_text("{}\n{}\n")
    assert "has no 'file_name' column (columns found: none)" in error(DataError, load_training_data, data, R)


def test_repeated_csv_column(data: Path) -> None:
    (data / "metadata.csv").write_text("file_name,owner,owner\na.png,alice,bob\n")
    assert "repeats column(s) 'owner'" in error(DataError, load_training_data, data, R)


def test_malformed_csv(data: Path) -> None:
    (data / "metadata.csv").write_text("file_name,owner\na.png,alice\nb.png,bob,extra\n")
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv is not a valid CSV file" in msg


def test_csv_not_utf8(data: Path) -> None:
    (data / "metadata.csv").write_bytes(b"file_name,owner\na.png,\xff\xfe\xfa\n")
    assert "is not UTF-8 text" in error(DataError, load_training_data, data, R)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"file_name": "b.png", "owner": "bob"', "line 2: not valid JSON"),
        ('["b.png", "bob"]', "line 2: expected a JSON object {...}, got an array"),
        ('{"file_name": "b.png", "owner": ["bob"]}', "line 2: owner must be a string, got an array"),
    ],
)
def test_malformed_jsonl_line(data: Path, line: str, expected: str) -> None:
    (data / "metadata.jsonl").write_text(json.dumps(rows3()[0]) + "\n" + line + "\n")
    msg = error(DataError, load_training_data, data, R)
    assert f"metadata.jsonl {expected}" in msg


def test_jsonl_line_numbers_count_blank_lines(data: Path) -> None:
    (data / "metadata.jsonl").write_text(
        json.dumps(rows3()[0]) + "\n\n" + json.dumps({"file_name": "b.png", "owner": " "}) + "\n"
    )
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.jsonl line 3 (file_name 'b.png'): owner is empty" in msg


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("/etc/passwd", "file_name is an absolute path"),
        ("C:\\data\\a.png", "file_name is an absolute path"),
        ("\\\\server\\a.png", "file_name is an absolute path"),
        ("../outside.png", "file_name contains '..'"),
        ("sub/../../outside.png", "file_name contains '..'"),
    ],
)
def test_file_name_leaving_the_folder(data: Path, file_name: str, expected: str) -> None:
    png(data.parent / "outside.png")
    rows = rows3()
    rows[1]["file_name"] = file_name
    write_jsonl(data, rows)  # JSONL: a CSV writer here would mangle the backslashes
    msg = error(DataError, load_training_data, data, R)
    assert f"metadata.jsonl line 2 (file_name {file_name!r}): {expected}" in msg


def test_symlink_leaving_the_folder(data: Path) -> None:
    outside = png(data.parent / "outside.png")
    os.symlink(outside, data / "link.png")
    os.symlink(data.parent, data / "up")
    for row, name in ((3, "link.png"), (3, "up/outside.png")):
        rows = rows3()
        rows[2]["file_name"] = name
        write_csv(data, rows)
        msg = error(DataError, load_training_data, data, R)
        assert f"metadata.csv row {row} (file_name '{name}')" in msg and "leaves the folder" in msg


def test_symlink_inside_the_folder_is_fine(data: Path) -> None:
    os.symlink(data / "a.png", data / "alias.png")
    rows = rows3()
    rows[0]["file_name"] = "alias.png"  # a.png itself is not listed: the alias is its one row
    write_csv(data, rows)
    assert load_training_data(data, R).file_names[0] == "alias.png"


def test_missing_file(data: Path) -> None:
    rows = rows3()
    rows[2]["file_name"] = "sub/gone.png"
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv row 3 (file_name 'sub/gone.png'): file" in msg and "does not exist" in msg


def test_file_name_is_a_folder(data: Path) -> None:
    rows = rows3()
    rows[0]["file_name"] = "sub"
    write_csv(data, rows)
    assert "row 1 (file_name 'sub'):" in error(DataError, load_training_data, data, R)


def test_empty_file_name(data: Path) -> None:
    rows = rows3()
    rows[1]["file_name"] = ""
    write_csv(data, rows)
    assert "metadata.csv row 2: file_name is empty" in error(DataError, load_training_data, data, R)


@pytest.mark.parametrize("content", [b"", b"this is not a png", None])
def test_unreadable_image(data: Path, content: bytes | None) -> None:
    if content is None:  # a real PNG cut in half
        content = (data / "b.png").read_bytes()[:40]
    (data / "b.png").write_bytes(content)
    write_csv(data, rows3())
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv row 2 (file_name 'b.png')" in msg and "is not a readable image" in msg


def test_non_image_file(data: Path) -> None:
    (data / "notes.txt").write_text("hello")
    rows = rows3()
    rows[0]["file_name"] = "notes.txt"
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert "row 1 (file_name 'notes.txt')" in msg and "is not a readable image" in msg
    assert "not a recognised image format" in msg and "0x" not in msg  # no buffer address


@pytest.mark.parametrize("owner", ["", "   "])
def test_empty_owner(data: Path, owner: str) -> None:
    rows = rows3()
    rows[1]["owner"] = owner
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv row 2 (file_name 'b.png'): owner is empty" in msg


@pytest.mark.parametrize("column", ["owner", "sample_id"])
def test_padded_owner_or_id(data: Path, column: str) -> None:
    rows = rows3()
    rows[1][column] = " bob"
    write_jsonl(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert f"line 2 (file_name 'b.png'): {column} ' bob' has leading or trailing whitespace" in msg


def test_duplicate_sample_id(data: Path) -> None:
    rows = rows3()
    rows[2]["sample_id"] = "007"
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert "metadata.csv row 3 (file_name 'sub/c.png'): duplicate sample_id '007'" in msg
    assert msg.endswith("(already used by row 1 (file_name 'a.png'))")


def test_duplicate_default_sample_id(data: Path) -> None:
    write_csv(data, [{"file_name": "a.png", "owner": "alice"}, {"file_name": "a.png", "owner": "bob"}])
    assert "row 2 (file_name 'a.png'): duplicate sample_id 'a.png'" in error(DataError, load_training_data, data, R)


def test_metadata_is_checked_before_any_image_is_decoded(data: Path) -> None:
    (data / "b.png").write_bytes(b"broken")  # row 2 would fail decoding...
    rows = rows3()
    rows[2]["owner"] = ""  # ...but row 3's metadata error must be reported first
    write_csv(data, rows)
    assert "row 3 (file_name 'sub/c.png'): owner is empty" in error(DataError, load_training_data, data, R)


# ------------------------------------------------------------ one image listed twice


def test_same_file_under_two_owners_names_both_rows(data: Path) -> None:
    rows = rows3()
    rows.append({"file_name": "a.png", "owner": "bob", "sample_id": "010"})
    write_csv(data, rows)
    for duplicates in (Duplicates.REFUSE, Duplicates.ALLOW_SAME_OWNER):  # --allow-duplicates does not help
        msg = error(DataError, load_training_data, data, R, duplicates=duplicates)
        assert "more than one owner" in msg
        assert f"the same file {(data / 'a.png').resolve()}" in msg
        assert "row 1 (file_name 'a.png'), sample_id '007', owner 'alice'" in msg
        assert "row 4 (file_name 'a.png'), sample_id '010', owner 'bob'" in msg


def test_byte_identical_copies_under_two_owners(data: Path) -> None:
    (data / "copy.png").write_bytes((data / "sub" / "c.png").read_bytes())
    rows = rows3()
    rows.append({"file_name": "copy.png", "owner": "bob", "sample_id": "010"})
    write_jsonl(data, rows)
    msg = error(DataError, load_training_data, data, R, duplicates=Duplicates.ALLOW_SAME_OWNER)
    assert f"byte-identical files (sha256 {sha256_file(data / 'copy.png')[:12]}" in msg
    assert "line 3 (file_name 'sub/c.png'), sample_id '009', owner 'alice'" in msg
    assert "line 4 (file_name 'copy.png'), sample_id '010', owner 'bob'" in msg


@pytest.mark.parametrize("copy", [False, True])
def test_same_owner_twice_needs_allow_duplicates(data: Path, copy: bool) -> None:
    if copy:
        (data / "copy.png").write_bytes((data / "a.png").read_bytes())
    rows = rows3()
    rows.append({"file_name": "copy.png" if copy else "a.png", "owner": "alice", "sample_id": "010"})
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert "more than once" in msg and "--allow-duplicates" in msg
    assert "row 1 (file_name 'a.png'), sample_id '007'" in msg and "row 4" in msg and "sample_id '010'" in msg
    table = load_training_data(data, R, duplicates=Duplicates.ALLOW_SAME_OWNER)
    assert table.ids == ("007", "008", "009", "010") and table.sha256[0] == table.sha256[3]


def test_symlink_to_a_listed_file_is_the_same_file(data: Path) -> None:
    os.symlink(data / "b.png", data / "alias.png")
    rows = rows3()
    rows.append({"file_name": "alias.png", "owner": "alice", "sample_id": "010"})
    write_csv(data, rows)
    msg = error(DataError, load_training_data, data, R)
    assert f"the same file {(data / 'b.png').resolve()}" in msg and "owner 'bob'" in msg and "owner 'alice'" in msg


def test_same_file_is_refused_before_any_image_is_decoded(data: Path) -> None:
    (data / "b.png").write_bytes(b"broken")  # row 2 would fail decoding
    rows = rows3()
    rows.append({"file_name": "a.png", "owner": "bob", "sample_id": "010"})
    write_csv(data, rows)
    assert "more than one owner" in error(DataError, load_training_data, data, R)


def test_recorded_runs_load_their_duplicates_unchecked(data: Path) -> None:
    rows = rows3()
    rows.append({"file_name": "a.png", "owner": "bob", "sample_id": "010"})
    write_csv(data, rows)
    assert load_training_data(data, R, duplicates=Duplicates.UNCHECKED).owners == ("alice", "bob", "alice", "bob")


def test_duplicate_targets_are_still_fine(tmp_path: Path) -> None:
    """Two targets may show the same image: only training images are paid."""
    png(tmp_path / "x.png")
    png(tmp_path / "y.png")
    assert load_targets(tmp_path, R).ids == ("x", "y")
    write_csv(tmp_path, [{"file_name": "x.png", "target_id": "t1"}, {"file_name": "x.png", "target_id": "t2"}])
    assert load_targets(tmp_path, R).ids == ("t1", "t2")


def test_allow_duplicates_keeps_old_recipes_and_is_recorded(tmp_path: Path) -> None:
    base = TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path)
    old = base.to_json()
    del old["allow_duplicates"]  # a run.json written before the option existed
    assert TrainConfig.from_json(old).recipe_hash() == base.recipe_hash()
    allowed = TrainConfig(data=tmp_path, targets=tmp_path, out=tmp_path, allow_duplicates=True)
    assert allowed.to_json()["allow_duplicates"] is True and allowed.recipe_hash() != base.recipe_hash()


# ------------------------------------------------------------------- targets: bad input


def test_no_targets(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("nothing here")
    msg = error(DataError, load_targets, tmp_path, R)
    assert msg.startswith("no targets:") and str(tmp_path) in msg and "png" in msg
    write_csv(tmp_path, [], columns=["file_name", "target_id"])
    assert "no targets: " in error(DataError, load_targets, tmp_path, R)


def test_duplicate_target_id_without_metadata(tmp_path: Path) -> None:
    png(tmp_path / "cat.png")
    png(tmp_path / "cat.jpg")
    msg = error(DataError, load_targets, tmp_path, R)
    assert "targets file 'cat.png'" in msg and "duplicate target_id 'cat' (already used by file 'cat.jpg')" in msg


def test_duplicate_target_id_with_metadata(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    png(tmp_path / "b.png")
    write_jsonl(tmp_path, [{"file_name": "a.png", "target_id": "t"}, {"file_name": "b.png", "target_id": "t"}])
    msg = error(DataError, load_targets, tmp_path, R)
    assert "metadata.jsonl line 2 (file_name 'b.png'): duplicate target_id 't'" in msg


def test_unreadable_target(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG garbage")
    msg = error(DataError, load_targets, tmp_path, R, what="reference")
    assert "reference file 'b.png'" in msg and "is not a readable image" in msg


def test_target_leaving_the_folder(tmp_path: Path) -> None:
    inside = tmp_path / "targets"
    outside = png(tmp_path / "secret.png")
    png(inside / "a.png")
    os.symlink(outside, inside / "b.png")
    msg = error(DataError, load_targets, inside, R)
    assert "targets file 'b.png'" in msg and "leaves the folder" in msg
    write_csv(inside, [{"file_name": "../secret.png"}])
    assert "row 1 (file_name '../secret.png'): file_name contains '..'" in error(DataError, load_targets, inside, R)


def test_target_missing_file_and_column(tmp_path: Path) -> None:
    write_csv(tmp_path, [{"file_name": "gone.png"}])
    assert "row 1 (file_name 'gone.png'): file" in error(DataError, load_targets, tmp_path, R)
    write_csv(tmp_path, [{"target_id": "t"}])
    assert "has no 'file_name' column" in error(DataError, load_targets, tmp_path, R)


def test_target_blank_owner(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    write_jsonl(tmp_path, [{"file_name": "a.png", "owner": "  "}])
    msg = error(DataError, load_targets, tmp_path, R)
    assert "line 1 (file_name 'a.png'): owner is only whitespace" in msg


# ---------------------------------------------------------------------------- property

_ID = st.text(alphabet=string.ascii_letters + string.digits + "-_. é", min_size=1, max_size=12).filter(
    lambda s: s == s.strip()
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ids=st.lists(_ID, min_size=1, max_size=6, unique=True), use_csv=st.booleans())
def test_ids_round_trip(tmp_path_factory: pytest.TempPathFactory, ids: list[str], use_csv: bool) -> None:
    folder = tmp_path_factory.mktemp("ids")
    for i in range(len(ids)):
        png(folder / f"img{i}.png", (30 * i, 0, 0, 255))  # one image each: one image twice is refused
    rows = [{"file_name": f"img{i}.png", "owner": f"o{i}", "sample_id": sample_id} for i, sample_id in enumerate(ids)]
    if use_csv:
        pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    else:
        write_jsonl(folder, rows)
    table = load_training_data(folder, 2)
    assert table.ids == tuple(ids)
    assert table.owners == tuple(f"o{i}" for i in range(len(ids)))
    assert table.images.shape == (len(ids), 3, 2, 2)
