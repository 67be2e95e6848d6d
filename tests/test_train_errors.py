"""Bad input to `royalty train`: one clear message and the documented exit code, before training."""

from __future__ import annotations

import pytest

from train_fixtures import assert_fails, data, royalty, targets, train  # noqa: F401 (data, targets: fixtures)




def test_missing_data_folder(tmp_path, targets) -> None:
    assert_fails(train(tmp_path / "nope", targets, tmp_path / "out"), 66, "nope", "does not exist")


def test_empty_data_folder(tmp_path, targets) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_fails(train(empty, targets, tmp_path / "out"), 65, "metadata")


def test_empty_owner_names_the_row(tmp_path, data, targets) -> None:
    meta = data / "metadata.csv"
    lines = meta.read_text().splitlines()
    lines[2] = lines[2].replace(",ann,", ",,")
    meta.write_text("\n".join(lines) + "\n")
    assert_fails(train(data, targets, tmp_path / "out"), 65, "row 2", "owner")


def test_file_leaving_the_folder(tmp_path, data, targets) -> None:
    meta = data / "metadata.csv"
    meta.write_text(meta.read_text().replace("ann_circle.png", "../ann_circle.png", 1))
    assert_fails(train(data, targets, tmp_path / "out"), 65, "row 1", "..")


def test_missing_image(tmp_path, data, targets) -> None:
    (data / "bob_square.png").unlink()
    assert_fails(train(data, targets, tmp_path / "out"), 65, "bob_square.png")


def test_unreadable_image(tmp_path, data, targets) -> None:
    (data / "bob_square.png").write_bytes(b"not a png")
    assert_fails(train(data, targets, tmp_path / "out"), 65, "bob_square.png", "image")


def test_duplicate_sample_id(tmp_path, data, targets) -> None:
    meta = data / "metadata.csv"
    text = meta.read_text().replace("file_name,owner,", "file_name,owner,sample_id,", 1)
    lines = text.splitlines()
    lines[1:] = [line.replace(",ann,", ",ann,same,").replace(",bob,", ",bob,other,") for line in lines[1:]]
    meta.write_text("\n".join(lines) + "\n")
    assert_fails(train(data, targets, tmp_path / "out"), 65, "duplicate sample_id")


def test_one_image_listed_twice(tmp_path, data, targets) -> None:
    """Issue 21: under two owners always refused; under one only with --allow-duplicates, recorded in run.json."""
    import json

    meta = data / "metadata.csv"
    rows = meta.read_text()
    (data / "copy.png").write_bytes((data / "ann_circle.png").read_bytes())
    meta.write_text(rows + "copy.png,bob,circle,CC0-1.0\n")
    for extra in ((), ("--allow-duplicates",)):
        assert_fails(train(data, targets, tmp_path / "out", *extra), 65, "more than one owner", "row 1 (file_name 'ann_circle.png')", "row 7 (file_name 'copy.png')", "owner 'bob'")
    meta.write_text(rows + "copy.png,ann,circle again,CC0-1.0\n")
    assert_fails(train(data, targets, tmp_path / "out"), 65, "more than once", "row 7", "--allow-duplicates")
    assert not (tmp_path / "out").exists()
    out = tmp_path / "allowed"
    proc = train(data, targets, out, "--allow-duplicates")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config"]["allow_duplicates"] is True and len(manifest["inputs"]["train"]) == 7


def test_no_targets(tmp_path, data) -> None:
    empty = tmp_path / "t"
    empty.mkdir()
    assert_fails(train(data, empty, tmp_path / "out"), 65, "no targets")


def test_resolution_the_model_cannot_take(tmp_path, data, targets) -> None:
    proc = royalty("train", data, "--targets", targets, "--out", tmp_path / "out", "--steps", "1", "--resolution", "15", "--quiet")
    assert_fails(proc, 2, "resolution 15")


def test_out_holding_a_finished_run(tmp_path, data, targets) -> None:
    """Say whether it is this same run, already complete, or another one (test_train_retry.py: the rest)."""
    out = tmp_path / "out"
    assert train(data, targets, out).returncode == 0
    assert_fails(train(data, targets, out), 73, "finished run of this same recipe", "already complete", "--force")
    assert_fails(train(data, targets, out, "--seed", "1"), 73, "finished run of another recipe", "--force")
    assert train(data, targets, out, "--seed", "1", "--force").returncode == 0


def test_out_holding_something_else(tmp_path, data, targets) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert_fails(train(data, targets, out, "--force"), 73, "holds no royalty run")
    assert (out / "precious.txt").read_text() == "keep me"


def test_bad_option_value(tmp_path, data, targets) -> None:
    assert_fails(train(data, targets, tmp_path / "out", "--optimizer", "lion"), 2, "--optimizer")


@pytest.mark.parametrize(
    "extra,needle",
    [
        (("--estimator", "lottery"), "--estimator"),
        (("--estimator", "subset"), "--target-subset"),
        (("--estimator", "rotation"), "--target-subset"),
        (("--estimator", "rotation", "--target-subset", "99"), "exceeds"),
    ],
    ids=["unknown", "subset-without-size", "rotation-without-size", "more-than-the-targets"],
)
def test_bad_estimator_options(tmp_path, data, targets, extra, needle) -> None:
    assert_fails(train(data, targets, tmp_path / "out", *extra), 2, needle)


@pytest.mark.parametrize("value", ["0", "1001"])
def test_train_max_timestep_out_of_range(tmp_path, data, targets, value) -> None:
    assert_fails(train(data, targets, tmp_path / "out", "--train-max-timestep", value), 2, "--train-max-timestep")


def test_nothing_written_on_bad_input(tmp_path, targets) -> None:
    out = tmp_path / "out"
    train(tmp_path / "nope", targets, out)
    assert not out.exists()
