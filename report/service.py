"""`royalty report` as a library call: verify the run, compute, draw, write the files.

The CLI only parses options into a ReportRequest and prints the summary this returns.
Output: OUT (the HTML page, self-contained; by default RUN/report.html, or the
attribution's RUN/attributions/NAME/report.html) and OUT's `<stem>_files/` folder holding the
same run-level plots as PNG files, for slides and statements. Everything is written
atomically, and the same run gives byte-identical files (no timestamps in them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from royalty import __version__
from royalty.atomic import write_bytes, write_text
from royalty.attribution.contract.attribution_folder import attribution_dir
from royalty.errors import DataError, OutputError, UsageError
from royalty.payout.policy import Basis, PayoutPolicy
from royalty.report import charts, html, stats
from royalty.report.colours import owner_colours
from royalty.report.load import ImageRecord, ReportSource, load_source
from royalty.report.sources import ImageFolder, open_folder, true_owner
from royalty.report.thumbs import Thumb, data_uri, make_thumb

FORMAT_VERSION = 1
DOCUMENT = "royalty.report_summary"
DEFAULT_TOP = 8
DEFAULT_MAX_TARGETS = 50
PLOTS = ("efficiency", "owner_shares", "value_hist")
REPORT_NAME = "report.html"  # the page's name without --out, inside what it shows


@dataclass(frozen=True)
class ReportRequest:
    run_dir: Path
    out: Path | None = None  # None: default_out(run_dir, attribution)
    attribution: str | None = None
    top: int = DEFAULT_TOP
    basis: Basis = Basis.RAW
    max_targets: int = DEFAULT_MAX_TARGETS


def default_out(run_dir: Path, attribution: str | None = None) -> Path:
    """Where the page goes without --out: in the run folder, or in the attribution's folder."""
    folder = Path(run_dir) if attribution is None else attribution_dir(run_dir, attribution)
    return folder / REPORT_NAME


def files_dir(out: Path) -> Path:
    """Where the PNG plots go: report.html -> report_files/ (the browsers' own convention)."""
    return out.with_name(f"{out.stem}_files")


def check_request(request: ReportRequest, out: Path) -> None:
    if request.top < 1:
        raise UsageError(f"--top must be at least 1, not {request.top}")
    if request.max_targets < 1:
        raise UsageError(f"--max-targets must be at least 1, not {request.max_targets}")
    if out.is_dir():
        raise OutputError(f"--out {out} is a folder; give a file name such as report.html")
    folder = files_dir(out)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} exists and is not a folder; the report's plots go there")


def build_report(request: ReportRequest, progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Write the report files; return the summary document for stdout."""
    out = request.out if request.out is not None else default_out(request.run_dir, request.attribution)
    check_request(request, out)
    source = load_source(request.run_dir, request.basis, request.attribution)
    coded = source.values.coded
    progress(f"values verified: {len(coded.targets)} targets × {len(source.values.sample_ids) // max(len(coded.targets), 1)} training images")

    colours = owner_colours(coded.owners)
    overall = stats.overall_shares(coded, request.basis)
    shown_ids = list(coded.targets[: request.max_targets])  # targets are sorted ascending
    per_target = stats.target_stats(source.values, shown_ids, request.top)

    train_folder, target_folder = _folders(source)
    progress(f"thumbnails for {len(shown_ids)} targets and their top {request.top} contributors")
    views = _target_views(source, per_target, train_folder, target_folder)
    accuracy = _accuracy(source, target_folder, len(coded.owners))

    progress("plots")
    eff = stats.efficiency(source.steps) if source.steps is not None else None
    pngs = {
        "owner_shares": charts.owner_shares_png(overall.shares, colours),
        "value_hist": charts.value_hist_png(coded.values, coded.owner_codes, coded.owners, colours, coded.column),
    }
    if eff is not None:
        pngs = {"efficiency": charts.efficiency_png(eff), **pngs}

    page = html.Page(
        title="Royalty report",
        subtitle=_subtitle(source, coded.column),
        summary=_summary(source),
        owners=overall.shares,
        refusal=overall.refusal,
        per_target=PayoutPolicy(basis=request.basis).per_target,
        colours=colours,
        plots={name: data_uri(data, "image/png") for name, data in pngs.items()},
        efficiency=eff,
        efficiency_of="this attribution's targets" if source.steps_of == "attribution" else "the run's own targets",
        accuracy=accuracy,
        targets=tuple(views),
        targets_total=len(coded.targets),
        column=coded.column,
        top_n=request.top,
        footer=_footer(source),
    )
    written = []
    folder = files_dir(out)
    for name in PLOTS:
        if name in pngs:
            path = folder / f"{name}.png"
            write_bytes(path, pngs[name])
            written.append(path)
    write_text(out, html.render(page))
    written.insert(0, out)
    return {
        "format_version": FORMAT_VERSION,
        "document": DOCUMENT,
        "run_id": source.manifest.get("run_id"),
        "attribution": source.attribution,
        "basis": request.basis.value,
        "out": str(out),
        "files": [str(p) for p in written],
        "targets_total": len(coded.targets),
        "targets_shown": len(shown_ids),
        "targets_omitted": len(coded.targets) - len(shown_ids),
        "top": request.top,
        "owners": [{"owner": s.owner, "value": s.value, "share": s.share} for s in sorted(overall.shares, key=lambda s: s.owner)],
        "payout_refusal": overall.refusal,
        "top_owner_matches": None if accuracy is None else {"matches": accuracy.matches, "single_style_targets": accuracy.single_style},
    }


def _folders(source: ReportSource) -> tuple[ImageFolder, ImageFolder]:
    recorded = isinstance(source.manifest.get("input_folders"), dict)
    train_hint = "run.json input_folders.train" if recorded else "run.json config.data, resolved against the current folder"
    train = open_folder(source.train_folder, "training image", train_hint)
    if source.attribution is not None:
        targets_hint = f"attribution {source.attribution}: attribution.json images_folder"
    else:
        targets_hint = "run.json input_folders.targets" if recorded else "run.json config.targets, resolved against the current folder"
    return train, open_folder(source.targets_folder, "target", targets_hint)


def _record(records: dict[str, ImageRecord], key: str, what: str, where: str) -> ImageRecord:
    record = records.get(key)
    if record is None:
        raise DataError(f"{where} values name {what} {key!r}, which its manifest does not list")
    return record


def _target_views(
    source: ReportSource, per_target: list[stats.TargetStats], train: ImageFolder, targets: ImageFolder
) -> list[html.TargetView]:
    cache: dict[tuple[str, str], Thumb] = {}  # a training image in many top lists is decoded once
    where = f"the {'attribution' if source.attribution else 'run'}'s"

    def thumb(folder: ImageFolder, record: ImageRecord) -> Thumb:
        key = (folder.what, record.id)
        if key not in cache:
            cache[key] = make_thumb(folder.read(record), f"{folder.what} {record.id!r}")
        return cache[key]

    views = []
    for st in per_target:
        target = _record(source.targets, st.target_id, "target", where)
        contributions = []
        for c in st.top:
            rec = _record(source.train, c.sample_id, "training image", where)
            contributions.append(html.Contribution(c.sample_id, c.owner, c.value, thumb(train, rec), train.cell(rec, "caption")))
        views.append(
            html.TargetView(
                stats=st,
                thumb=thumb(targets, target),
                caption=targets.cell(target, "caption"),
                true_owner=true_owner(target, targets),
                contributions=tuple(contributions),
            )
        )
    return views


def _accuracy(source: ReportSource, targets: ImageFolder, n_owners: int) -> html.Accuracy | None:
    """How often the top-paid owner is the owner whose style a single-style target is."""
    truth = {t: true_owner(r, targets) for t, r in source.targets.items()}
    top = stats.top_owner_per_target(source.values)
    judged = [t for t in top if truth.get(t)]
    if not judged:
        return None
    matches = sum(top[t] == truth[t] for t in judged)
    return html.Accuracy(matches=int(matches), single_style=len(judged), owners=n_owners)


def _subtitle(source: ReportSource, column: str) -> str:
    parts = [f"run {source.manifest.get('run_id', '?')}"]
    if source.attribution:
        mode = (source.attribution_manifest or {}).get("mode")
        parts.append(f"attribution {source.attribution}" + (f" ({mode})" if mode else ""))
    parts.append(f"basis {column}")
    return " · ".join(parts)


def _summary(source: ReportSource) -> tuple[tuple[str, str], ...]:
    m = source.manifest
    config = m.get("config", {}) if isinstance(m.get("config"), dict) else {}
    coded = source.values.coded
    steps = m.get("total_steps", config.get("steps"))
    rows = [
        ("run id", str(m.get("run_id", "?"))),
        ("valued steps", "?" if steps is None else str(steps)),
    ]
    if config.get("warmup_steps"):
        rows.append(("warm-up steps", str(config["warmup_steps"])))
    rows += [
        ("optimizer", str(config.get("optimizer", "?"))),
        ("lr", f"{config['lr']:g}" if isinstance(config.get("lr"), (int, float)) else "?"),
        ("order", _order(config)),
        ("estimator", str(config.get("estimator", "?"))),
        ("training images", str(int(np.sum(coded.images)))),
        ("owners", str(len(coded.owners))),
        ("targets", str(len(coded.targets))),
    ]
    return tuple(rows)


def _footer(source: ReportSource) -> tuple[str, ...]:
    return (
        (
            f"royalty {__version__} · values {source.values.path.name} sha256 {source.values.sha256} "
            "(verified against the manifest) · every image shown was checked against its recorded sha256."
        ),
        (
            "A value is a training image's In-Run Data Shapley value for a target, in target-loss units: "
            "positive means the image lowered the target's loss — it helped the model make it "
            f"(design document: docs/design.md §1 in the source repository of royalty {__version__})."
        ),
        "Shares: each owner's values summed, clipped at 0, share = clipped / Σ clipped (docs/design.md §3).",
    )


def _order(config: dict) -> str:
    """The order, and at order 2 how the curvature was taken, e.g. `2 (secant)` (docs/design.md §1.6)."""
    order = config.get("order", "?")
    return f"{order} ({config.get('curvature', 'hessian')})" if order == 2 else str(order)
