"""`royalty report`: the real CLI in processes of their own (train_fixtures.royalty) on a
tiny trained run, and the page in a real browser (headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from report_fixtures import (
    CHROMIUM,
    chromium,
    copy_run,
    manifest,
    probe_images,
    report,
    rewrite_table,
    summary,
    write_manifest,
)
from royalty.atomic import sha256_file
from royalty.report.schema import report_schema
from train_fixtures import TINY, make_data, make_targets, royalty

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A folder holding data/, targets/ and run/ (trained with paths relative to it)."""
    root = tmp_path_factory.mktemp("report")
    make_data(root / "data")
    make_targets(root / "targets")
    royalty("train", "data", "--targets", "targets", "--out", "run", "--steps", "4", *TINY, cwd=root, check=True)
    return root


@pytest.fixture(scope="module")
def page(base, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("page") / "report.html"
    return out, summary(report(base / "run", out))


def _imgs(html: str) -> list[str]:
    return re.findall(r"<img [^>]*src=\"([^\"]*)\"", html)


# ------------------------------------------------------------------------------ contents


def test_page_is_self_contained_and_shows_every_target(base, page):
    out, doc = page
    jsonschema.validate(doc, report_schema())
    html = out.read_text(encoding="utf-8")
    srcs = _imgs(html)
    # 2 run-level plots + efficiency, each target twice (tile + card), 6 contributors each (default top 8 > 6 images).
    assert len(srcs) == 3 + 2 * 2 + 2 * 6
    assert all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    # Nothing is fetched: no external scripts, styles, fonts or links to resources.
    assert not re.search(r"""(src|href)=["'](https?:|//)""", html)
    assert "<link" not in html and "<script" not in html and "url(" not in html and "@import" not in html
    for target in ("bar-ann", "bar-bob"):
        assert f'id="t-{target}"' in html
    assert doc["targets_total"] == doc["targets_shown"] == 2 and doc["targets_omitted"] == 0
    assert doc["top_owner_matches"]["single_style_targets"] == 2
    assert "true owner" in html and "single-style targets" in html


def test_png_plots_are_written_next_to_the_page(page):
    out, doc = page
    folder = out.parent / "report_files"
    expected = [out] + [folder / f"{n}.png" for n in ("efficiency", "owner_shares", "value_hist")]
    assert doc["files"] == [str(p) for p in expected]
    for png in expected[1:]:
        data = png.read_bytes()
        assert data.startswith(PNG_MAGIC)
        with Image.open(png) as img:
            rgb = np.asarray(img.convert("RGB")).reshape(-1, 3)
        assert img.width > 300 and len(np.unique(rgb, axis=0)) > 20  # a drawn plot, not a blank


def test_shares_are_payout_shares(base, page):
    _, doc = page
    statement = json.loads(royalty("payout", base / "run", "--revenue", "100.00", check=True).stdout)
    paid = {p["owner"]: float(p["share"]) for p in statement["payees"]}
    assert {o["owner"]: pytest.approx(paid[o["owner"]], abs=1e-9) for o in doc["owners"]} == paid
    assert sum(o["share"] for o in doc["owners"]) == pytest.approx(1.0)


def test_same_run_gives_byte_identical_files(base, page, tmp_path):
    _, doc = page
    again = summary(report(base / "run", tmp_path / "report.html"))
    for first, second in zip(doc["files"], again["files"], strict=True):
        assert Path(first).read_bytes() == Path(second).read_bytes(), Path(first).name


def test_top_and_max_targets(base, tmp_path):
    out = tmp_path / "r.html"
    doc = summary(report(base / "run", out, "--top", "2", "--max-targets", "1"))
    html = out.read_text()
    assert (doc["targets_shown"], doc["targets_omitted"], doc["top"]) == (1, 1, 2)
    assert 'id="t-bar-ann"' in html and 'id="t-bar-bob"' not in html
    assert "Showing 1 of 2 targets" in html and "1 omitted" in html
    assert html.count('class="sid"') == 2


def test_top_contributors_are_the_largest_values(base, tmp_path):
    out = tmp_path / "r.html"
    summary(report(base / "run", out, "--top", "3", "--max-targets", "1"))
    values = pq.read_table(base / "run" / "values.parquet").to_pandas()
    ann = values[values.target_id == "bar-ann"].sort_values(["value", "sample_id"], ascending=[False, True])
    card = out.read_text().split('id="t-bar-ann"')[1]
    assert re.findall(r'<span class="sid">([^<]*)</span>', card) == list(ann.sample_id[:3])


def test_specific_basis_shows_the_per_target_split_payout_pays(base, tmp_path):
    doc = summary(report(base / "run", tmp_path / "r.html", "--basis", "specific"))
    assert doc["basis"] == "specific" and doc["payout_refusal"] is None
    html = (tmp_path / "r.html").read_text()
    assert "value_specific" in html and "equal part of the revenue" in html
    statement = json.loads(royalty("payout", base / "run", "--revenue", "100.00", "--basis", "specific", check=True).stdout)
    assert statement["policy"]["target_weighting"] == "per_target"
    paid = {p["owner"]: float(p["share"]) for p in statement["payees"]}
    assert {o["owner"]: o["share"] for o in doc["owners"]} == pytest.approx(paid, abs=1e-9)
    assert sorted(paid.values())[-1] < 1.0  # per target, both owners are paid: not noise's all-or-nothing


def test_a_basis_payout_refuses_is_shown_as_refused(base, tmp_path):
    """A target where no owner is positive: payout refuses (exit 65), the report says so and shows no share."""
    run = copy_run(base / "run", tmp_path / "run")
    table = pq.read_table(run / "values.parquet")
    column = table.schema.get_field_index("value_specific")
    specific = table.column("value_specific").to_numpy()
    on_ann = pc.equal(table.column("target_id"), "bar-ann").to_numpy(zero_copy_only=False)
    rewrite_table(run, "values.parquet", table.set_column(column, "value_specific", pa.array(np.where(on_ann, -np.abs(specific) - 1e-6, specific))))
    refused = royalty("payout", run, "--revenue", "100.00", "--basis", "specific")
    assert refused.returncode == 65 and "target 'bar-ann'" in refused.stderr
    doc = summary(report(run, tmp_path / "r.html", "--basis", "specific"))
    assert doc["payout_refusal"] is not None and "bar-ann" in doc["payout_refusal"]
    assert all(o["share"] == 0 for o in doc["owners"])
    assert "refuses this basis" in (tmp_path / "r.html").read_text()


def test_owner_at_or_below_zero_gets_no_share(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    table = pq.read_table(run / "values.parquet")
    value = table.column("value").to_numpy()
    is_bob = pc.equal(table.column("owner"), "bob").to_numpy(zero_copy_only=False)
    value = np.where(is_bob, -np.abs(value) - 1e-6, np.abs(value) + 1e-6)
    rewrite_table(run, "values.parquet", table.set_column(table.schema.get_field_index("value"), "value", pa.array(value)))
    doc = summary(report(run, tmp_path / "r.html"))
    shares = {o["owner"]: o["share"] for o in doc["owners"]}
    assert shares == {"ann": 1.0, "bob": 0.0}
    assert "paid nothing" in (tmp_path / "r.html").read_text()


def test_unmeasured_target_loss_is_shown_as_such(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    steps = pq.read_table(run / "steps.parquet")
    after = steps.column("target_loss_after").to_numpy().copy()
    after[:-1] = np.nan  # as the cheaper estimators record it: only some steps measured
    i = steps.schema.get_field_index("target_loss_after")
    rewrite_table(run, "steps.parquet", steps.set_column(i, "target_loss_after", pa.array(after)))
    summary(report(run, tmp_path / "r.html"))
    assert "1 of 4" in (tmp_path / "r.html").read_text()


# ------------------------------------------------------------------------- image folders


def test_images_found_through_input_folders_from_anywhere(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    doc = manifest(run)
    doc["input_folders"] = {"train": str(base / "data"), "targets": str(base / "targets"), "reference": None}
    write_manifest(run, doc)
    summary(report(run, tmp_path / "r.html", cwd=tmp_path))


def test_without_input_folders_paths_resolve_against_the_cwd(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    doc = manifest(run)
    doc.pop("input_folders", None)
    write_manifest(run, doc)
    summary(report(run, tmp_path / "r.html", cwd=base))  # where training ran: config.data is "data"
    proc = report(run, tmp_path / "r2.html", cwd=tmp_path)
    assert proc.returncode == 66, proc.stderr
    assert "current folder" in proc.stderr
    assert not (tmp_path / "r2.html").exists()


def _moved_images(base: Path, tmp_path: Path) -> tuple[Path, Path]:
    data = Path(shutil.copytree(base / "data", tmp_path / "data"))
    run = copy_run(base / "run", tmp_path / "run")
    doc = manifest(run)
    doc["input_folders"] = {"train": str(data), "targets": str(base / "targets"), "reference": None}
    write_manifest(run, doc)
    return run, data


def test_missing_image_is_exit_66_naming_it(base, tmp_path):
    run, data = _moved_images(base, tmp_path)
    (data / "bob_cross.png").unlink()
    proc = report(run, tmp_path / "r.html", "--top", "100")
    assert proc.returncode == 66, proc.stderr
    assert "bob_cross" in proc.stderr and "missing" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_changed_image_is_exit_65(base, tmp_path):
    run, data = _moved_images(base, tmp_path)
    Image.new("RGB", (16, 16), "white").save(data / "ann_square.png")
    proc = report(run, tmp_path / "r.html", "--top", "100")
    assert proc.returncode == 65, proc.stderr
    assert "ann_square" in proc.stderr and "sha256" in proc.stderr


# ----------------------------------------------------------------------------- refusals


def test_tampered_values_are_refused(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    table = pq.read_table(run / "values.parquet")
    pq.write_table(table.set_column(3, "value", pc.multiply(table.column("value"), 2.0)), run / "values.parquet")
    proc = report(run, tmp_path / "r.html")
    assert proc.returncode == 65 and "does not match its manifest" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_specific_basis_needs_the_column(base, tmp_path):
    run = copy_run(base / "run", tmp_path / "run")
    rewrite_table(run, "values.parquet", pq.read_table(run / "values.parquet").drop_columns(["value_specific"]))
    proc = report(run, tmp_path / "r.html", "--basis", "specific")
    assert proc.returncode == 2 and "value_specific" in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "words"),
    [
        (("--top", "0"), 2, "--top"),
        (("--max-targets", "0"), 2, "--max-targets"),
        (("--attribution", "../x"), 2, "cannot name an attribution"),
        (("--attribution", "nope"), 66, "no attribution 'nope'"),
    ],
)
def test_usage_errors(base, tmp_path, args, code, words):
    proc = report(base / "run", tmp_path / "r.html", *args)
    assert proc.returncode == code, proc.stderr
    assert words in proc.stderr


def test_missing_run_and_folder_out(base, tmp_path):
    missing = report(tmp_path / "nothing", tmp_path / "r.html")
    assert missing.returncode == 66 and str(tmp_path / "nothing") in missing.stderr, missing.stderr
    assert missing.stdout == "" and not (tmp_path / "r.html").exists()
    proc = report(base / "run", tmp_path)
    assert proc.returncode == 73 and "is a folder" in proc.stderr
    assert proc.stdout == "" and list(tmp_path.iterdir()) == []


def test_default_out_is_inside_the_run_folder(base, tmp_path):
    """Issue 21: without --out the page goes into RUN, not into whatever folder the user is in."""
    run = copy_run(base / "run", tmp_path / "run")
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    doc = summary(royalty("report", run, "--quiet", cwd=cwd))
    assert doc["files"][0] == str(run / "report.html") and (run / "report.html").is_file()
    assert all(Path(f).parent == run / "report_files" for f in doc["files"][1:])
    assert list(cwd.iterdir()) == []
    # the run is still a valid run: its outputs are checked by name, not as a whole folder
    royalty("payout", run, "--revenue", "1.00", "--on-no-positive", "equal", check=True)


# --------------------------------------------------------------------------- attributions


def _attribution(base: Path, tmp_path: Path, name: str = "sold") -> tuple[Path, Path]:
    """An attribution folder as `royalty attribute` writes it: new targets, their values."""
    run = copy_run(base / "run", tmp_path / "run")
    images = tmp_path / "sold-images"
    images.mkdir()
    renamed = {"bar-ann": "sale-001", "bar-bob": "sale-002"}
    targets = []
    for old, new in renamed.items():
        src = base / "targets" / f"{old.split('-')[1]}.png"
        shutil.copy(src, images / f"{new}.png")
        targets.append({"id": new, "file_name": f"{new}.png", "sha256": sha256_file(images / f"{new}.png")})
    att = run / "attributions" / name
    att.mkdir(parents=True)
    table = pq.read_table(run / "values.parquet")
    ids = pa.array([renamed[t] for t in table.column("target_id").to_pylist()])
    pq.write_table(table.set_column(table.schema.get_field_index("target_id"), "target_id", ids), att / "values.parquet")
    doc = {
        "format_version": 1,
        "run_id": manifest(run)["run_id"],
        "name": name,
        "mode": "replay",
        "images_folder": str(images),
        "targets": targets,
        "outputs": {"values.parquet": sha256_file(att / "values.parquet")},
    }
    (att / "attribution.json").write_text(json.dumps(doc))
    return run, att


def test_attribution_targets_are_shown(base, tmp_path):
    run, _ = _attribution(base, tmp_path)
    out = tmp_path / "r.html"
    doc = summary(report(run, out, "--attribution", "sold"))
    jsonschema.validate(doc, report_schema())
    html = out.read_text()
    assert doc["attribution"] == "sold" and doc["targets_total"] == 2
    assert 'id="t-sale-001"' in html and 'id="t-sale-002"' in html and "bar-ann" not in html
    assert "attribution sold (replay)" in html
    assert doc["top_owner_matches"] is None  # the sold images name no owner


def test_default_out_of_an_attribution_is_inside_its_folder(base, tmp_path):
    run, att = _attribution(base, tmp_path)
    doc = summary(royalty("report", run, "--attribution", "sold", "--quiet", cwd=tmp_path))
    assert doc["files"][0] == str(att / "report.html") and (att / "report_files" / "value_hist.png").is_file()
    assert not (run / "report.html").exists() and not (tmp_path / "report.html").exists()
    summary(report(run, tmp_path / "again.html", "--attribution", "sold"))  # the attribution still verifies


def test_tampered_attribution_is_refused(base, tmp_path):
    run, att = _attribution(base, tmp_path)
    table = pq.read_table(att / "values.parquet")
    pq.write_table(table.slice(1), att / "values.parquet")
    proc = report(run, tmp_path / "r.html", "--attribution", "sold")
    assert proc.returncode == 65 and "attribution.json" in proc.stderr


def test_attribution_of_another_run_is_refused(base, tmp_path):
    run, att = _attribution(base, tmp_path)
    doc = json.loads((att / "attribution.json").read_text())
    doc["run_id"] = "0" * 16
    (att / "attribution.json").write_text(json.dumps(doc))
    proc = report(run, tmp_path / "r.html", "--attribution", "sold")
    assert proc.returncode == 65 and "another run" in proc.stderr


def test_unknown_attribution_lists_the_known_ones(base, tmp_path):
    run, _ = _attribution(base, tmp_path)
    proc = report(run, tmp_path / "r.html", "--attribution", "other")
    assert proc.returncode == 66 and "known: sold" in proc.stderr


def test_report_of_a_real_attribution(base, page, tmp_path):
    """`royalty attribute` (replay) of the run's own targets: same shares as the run, as payout pays."""
    run = copy_run(base / "run", tmp_path / "run")
    royalty("attribute", run, base / "targets", "--mode", "replay", "--name", "again", "--quiet", check=True)
    out = tmp_path / "r.html"
    doc = summary(report(run, out, "--attribution", "again"))
    _, own = page
    assert [o["owner"] for o in doc["owners"]] == [o["owner"] for o in own["owners"]]
    for mine, theirs in zip(doc["owners"], own["owners"], strict=True):
        assert mine["share"] == pytest.approx(theirs["share"], rel=1e-6)
    statement = json.loads(royalty("payout", run, "--attribution", "again", "--revenue", "1.00", check=True).stdout)
    paid = {p["owner"]: float(p["share"]) for p in statement["payees"]}
    assert {o["owner"]: o["share"] for o in doc["owners"]} == pytest.approx(paid, abs=1e-9)
    html = out.read_text()
    assert "this attribution&#x27;s targets" in html  # replay recorded its own efficiency trace
    assert doc["top_owner_matches"]["single_style_targets"] == 2


# ------------------------------------------------------------------------------- browser

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian chromium is not installed (apt-get install chromium; .ci/run installs it)"
)


@needs_chromium
def test_page_renders_in_chromium(page, tmp_path):
    out, _ = page
    shot = tmp_path / "shot.png"
    proc = chromium(out, tmp_path, f"--screenshot={shot}", "--window-size=1200,2000", "--hide-scrollbars")
    assert shot.is_file(), proc.stderr[-2000:]
    with Image.open(shot) as img:
        rgb = np.asarray(img.convert("RGB"))
    not_white = (rgb < 245).any(axis=2).mean()
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    assert not_white > 0.15, f"only {not_white:.1%} of the screenshot is drawn"
    assert colours > 500, f"only {colours} distinct colours: charts and images did not render"

    probe = probe_images(out, tmp_path)
    assert probe["total"] == len(_imgs(out.read_text())) and probe["bad"] == []
    assert probe["svgs"] >= 4  # a share bar and a histogram per target


@needs_chromium
def test_image_probe_catches_a_broken_image(tmp_path):
    """The check above can fail: a page with one undecodable image is reported."""
    good = "data:image/png;base64," + __import__("base64").b64encode(_png_bytes()).decode()
    html = tmp_path / "broken.html"
    html.write_text(
        f'<!DOCTYPE html><html><body><img alt="good" src="{good}"><img alt="broken" src="data:image/png;base64,AAAA"></body></html>'
    )
    probe = probe_images(html, tmp_path)
    assert probe["total"] == 2 and probe["bad"] == ["broken"]


def _png_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (4, 4), "red").save(buf, format="PNG")
    return buf.getvalue()
