"""Laying out the report page: one HTML string, styles inline, every image a data: URI.

Nothing is fetched when the page opens — no fonts, scripts or style sheets from
elsewhere — so the file can be mailed, archived with a payout statement, or opened
offline years later and still show the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from royalty.report import svg
from royalty.report.stats import Efficiency, OwnerShare, TargetStats
from royalty.report.thumbs import Thumb

MAX_LEGEND = 6
# Thumbnails smaller than their box are scaled up with hard pixel edges, not blurred.
TARGET_BOX = 128
CONTRIB_BOX = 72


@dataclass(frozen=True)
class Contribution:
    sample_id: str
    owner: str
    value: float
    thumb: Thumb
    caption: str


@dataclass(frozen=True)
class TargetView:
    stats: TargetStats
    thumb: Thumb
    caption: str
    true_owner: str | None
    contributions: tuple[Contribution, ...]


@dataclass(frozen=True)
class Accuracy:
    matches: int
    single_style: int
    owners: int


@dataclass(frozen=True)
class Page:
    title: str
    subtitle: str
    summary: tuple[tuple[str, str], ...]
    owners: tuple[OwnerShare, ...]
    refusal: str | None  # why `royalty payout --revenue` refuses this basis, if it does
    per_target: bool  # that split goes target by target (basis specific), not pooled
    colours: dict[str, str]
    plots: dict[str, str]  # "efficiency" / "owner_shares" / "value_hist" -> data: URI
    efficiency: Efficiency | None
    efficiency_of: str  # whose targets the trace is measured on, said in the heading
    accuracy: Accuracy | None
    targets: tuple[TargetView, ...]
    targets_total: int
    column: str
    top_n: int
    footer: tuple[str, ...]


def fmt_value(v: float) -> str:
    if v == 0:
        return "0"
    if 1e-4 <= abs(v) < 1e4:
        return f"{v:+.4g}"
    return f"{v:+.3e}"


def fmt_share(share: float) -> str:
    return f"{100 * share:.1f} %"


def render(page: Page) -> str:
    body = [
        _header(page),
        '<main>',
        _overview(page),
        _efficiency(page),
        _targets(page),
        "</main>",
        _footer(page),
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(page.title)}</title><style>{CSS}</style></head>\n"
        f"<body>{''.join(body)}</body></html>\n"
    )


def _img(thumb: Thumb, alt: str, box: int, cls: str = "") -> str:
    classes = " ".join(c for c in (cls, "px" if thumb.side < box else "") if c)
    return (
        f'<img src="{thumb.uri}" alt="{escape(alt)}" width="{box}" height="{box}"'
        f'{f" class={chr(34)}{classes}{chr(34)}" if classes else ""}>'
    )


def _badge(owner: str, colours: dict[str, str]) -> str:
    colour = colours.get(owner, svg.OTHERS)
    return f'<span class="badge" style="background:{colour}">{escape(owner)}</span>'


def _header(page: Page) -> str:
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in page.summary)
    return (
        f'<header><div class="wrap"><h1>{escape(page.title)}</h1><p class="sub">{escape(page.subtitle)}</p>'
        f'<dl class="facts">{cells}</dl></div></header>'
    )


def _overview(page: Page) -> str:
    rows = []
    for s in page.owners:
        bar = f'<span class="bar"><span style="width:{100 * s.share:.2f}%;background:{page.colours[s.owner]}"></span></span>'
        status = "" if s.paid or page.refusal else ' <span class="muted">(paid nothing)</span>'
        rows.append(
            f"<tr><td>{_badge(s.owner, page.colours)}{status}</td><td class=num>{s.images}</td>"
            f"<td class=num>{fmt_value(s.value)}</td><td class=num><b>{fmt_share(s.share)}</b></td><td>{bar}</td></tr>"
        )
    table = (
        '<table class="owners"><thead><tr><th>owner</th><th class=num>images</th>'
        f"<th class=num>Σ {escape(page.column)}</th><th class=num>share</th><th></th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
    accuracy = ""
    if page.accuracy is not None and page.accuracy.single_style:
        a = page.accuracy
        chance = f"; chance {100 / a.owners:.0f} %" if a.owners else ""
        accuracy = (
            f'<p class="callout">The top-paid owner is the target\'s true owner on <b>{a.matches} of '
            f"{a.single_style}</b> single-style targets ({100 * a.matches / a.single_style:.0f} %{chance}).</p>"
        )
    refusal = (
        f'<p class="callout">No share is shown: <code>royalty payout --revenue</code> refuses this basis: '
        f"{escape(page.refusal)}</p>"
        if page.refusal
        else ""
    )
    plots = "".join(
        f'<figure><img src="{page.plots[name]}" alt="{escape(alt)}"><figcaption>{escape(alt)}</figcaption></figure>'
        for name, alt in (("owner_shares", "Owner shares over all targets"), ("value_hist", "Distribution of all values"))
        if name in page.plots
    )
    return (
        '<section class="card"><h2>Owners over all targets</h2>'
        f'<p class="lead">{_split_rule(page)}</p>{refusal}'
        f'{accuracy}<div class="split">{table}</div><div class="plots">{plots}</div></section>'
    )


def _split_rule(page: Page) -> str:
    column = escape(page.column)
    if page.per_target:
        return (
            f"Each target's equal part of the revenue split by its owners' {column} for that target, clipped at 0, "
            "then summed per owner — the split <code>royalty payout --revenue</code> pays with this basis. "
            f"Σ {column} sums over all targets (against the targets' own mean it is 0 by construction)."
        )
    return (
        f"Each owner's {column} summed over every training image and every target, clipped at 0 and "
        "normalised — the split <code>royalty payout --revenue</code> pays with this basis."
    )


def _efficiency(page: Page) -> str:
    eff = page.efficiency
    if eff is None:
        return (
            '<section class="card"><h2>Efficiency</h2><p class="muted">No steps.parquet was recorded, '
            "so there is no efficiency trace to show.</p></section>"
        )
    ratio = eff.total_value / eff.total_actual if eff.n_measured and eff.total_actual != 0 else None
    r = eff.correlation
    facts = [
        ("steps measured", f"{eff.n_measured} of {len(eff.steps)}"),
        ("Σ target-loss change", fmt_value(eff.total_actual) if eff.n_measured else "—"),
        ("Σ values", fmt_value(eff.total_value) if eff.n_measured else "—"),
    ]
    if eff.unattributed is not None and eff.n_measured:
        residual = eff.total_residual or 0.0
        share = abs(residual) / abs(eff.total_actual) if eff.total_actual else None
        r2 = eff.accounted_correlation
        facts += [
            ("Σ unattributed", fmt_value(eff.total_unattributed or 0.0)),
            ("Σ residual", fmt_value(residual) + (f" ({100 * share:.1f} % of the change)" if share is not None else "")),
            ("per-step r, values + unattributed", f"{r2:.3f}" if r2 is not None else "—"),
        ]
    else:
        facts += [("ratio", f"{ratio:.3f}" if ratio is not None else "—")]
    facts += [("per-step correlation r", f"{r:.3f}" if r is not None else "—")]
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in facts)
    plot = f'<figure class="wide"><img src="{page.plots["efficiency"]}" alt="Efficiency trace"></figure>' if "efficiency" in page.plots else ""
    if eff.unattributed is not None:
        lead = (
            "Every step's fall of the targets' loss (before − after) is split three ways: the values paid to "
            "training images for that step (Σ values), what moved the loss that no image is paid for "
            "(unattributed: weight decay, momentum carried in from before the valued phase or from beyond the "
            "credit window), and the residual no term explains (higher orders of the step). The three add up "
            f"exactly in every step. Measured on {escape(page.efficiency_of)}."
        )
    else:
        lead = (
            "At every step the values of the batch (summed, averaged over targets) should match how much "
            "the targets' loss actually fell (before − after). A gap is what no training image accounts for: "
            f"curvature, and with AdamW weight decay and momentum. Measured on {escape(page.efficiency_of)}."
        )
    return (
        '<section class="card"><h2>Efficiency: do the values account for what the model learned?</h2>'
        f'<p class="lead">{lead}</p>'
        f'<dl class="facts light">{cells}</dl>{plot}</section>'
    )


def _targets(page: Page) -> str:
    shown = len(page.targets)
    omitted = page.targets_total - shown
    note = (
        f'<p class="callout warn">Showing {shown} of {page.targets_total} targets (sorted by target id); '
        f"{omitted} omitted — raise <code>--max-targets</code> to show more.</p>"
        if omitted
        else ""
    )
    tiles = "".join(_tile(t, page.colours) for t in page.targets)
    cards = "".join(_card(t, page) for t in page.targets)
    return (
        f'<section class="card"><h2>Targets at a glance</h2>{note}'
        f'<div class="tiles">{tiles}</div></section>{cards}'
    )


def _match(view: TargetView) -> str:
    if view.true_owner is None:
        return ""
    ok = view.stats.top_owner == view.true_owner
    return f'<span class="match {"ok" if ok else "no"}">{"✓" if ok else "✗"}</span>'


def _tile(view: TargetView, colours: dict[str, str]) -> str:
    top = view.stats.top_owner
    owner = _badge(top, colours) if top else '<span class="muted">none positive</span>'
    return (
        f'<a class="tile" href="#{_anchor(view.stats.target_id)}">{_img(view.thumb, view.stats.target_id, 64)}'
        f'<span class="tid">{escape(view.stats.target_id)}</span><span>{owner}{_match(view)}</span></a>'
    )


def _anchor(target_id: str) -> str:
    return "t-" + "".join(c if c.isalnum() or c in "-_" else f"_{ord(c):x}" for c in target_id)


def _card(view: TargetView, page: Page) -> str:
    s = view.stats
    meta = []
    if view.caption:
        meta.append(f'<span class="caption">“{escape(view.caption)}”</span>')
    if view.true_owner:
        verdict = "top owner matches" if s.top_owner == view.true_owner else "top owner differs"
        meta.append(f"true owner {_badge(view.true_owner, page.colours)} {_match(view)} <span class=muted>{verdict}</span>")
    legend = []
    for sh in s.shares[:MAX_LEGEND]:
        legend.append(
            f"<li>{_badge(sh.owner, page.colours)}<span class=num>{fmt_share(sh.share)}</span>"
            f"<span class='num muted'>{fmt_value(sh.value)}</span></li>"
        )
    if len(s.shares) > MAX_LEGEND:
        rest = s.shares[MAX_LEGEND:]
        legend.append(f"<li class=muted>{len(rest)} more owners: {fmt_share(sum(r.share for r in rest))}</li>")
    contribs = "".join(
        f'<li title="{escape(c.caption)}">{_img(c.thumb, c.sample_id, CONTRIB_BOX)}'
        f'<span class="sid">{escape(c.sample_id)}</span>{_badge(c.owner, page.colours)}'
        f'<span class="val {"pos" if c.value > 0 else "neg"}">{fmt_value(c.value)}</span></li>'
        for c in view.contributions
    )
    return (
        f'<article class="card target" id="{_anchor(s.target_id)}">'
        f'<div class="thead"><h3>{escape(s.target_id)}</h3>{" · ".join(meta)}</div>'
        f'<div class="tbody"><figure class="timg">{_img(view.thumb, s.target_id, TARGET_BOX)}</figure>'
        f'<div class="tcharts"><h4>Owner shares</h4>{svg.share_bar(s.shares, page.colours)}'
        f'<ul class="legend">{"".join(legend)}</ul>'
        f"<h4>Values of its {s.rows} training images</h4>{svg.histogram(s.histogram)}"
        f'<p class="muted small">{s.positive_rows} of {s.rows} helped (value &gt; 0)</p></div>'
        f'<div class="contrib"><h4>Top {len(view.contributions)} contributors</h4><ol class="thumbs">{contribs}</ol></div>'
        "</div></article>"
    )


def _footer(page: Page) -> str:
    return f'<footer>{"".join(f"<p>{escape(line)}</p>" for line in page.footer)}</footer>'


CSS = """
:root{--ink:#1f2933;--muted:#616e7c;--line:#e4e7eb;--bg:#f3f5f8;--accent:#0072B2;--good:#0f7b4d;--bad:#b42318}
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--ink);background:var(--bg)}
header{background:linear-gradient(120deg,#102a43,#243b53);color:#fff;padding:28px 0 22px}
.wrap,main{max-width:1180px;margin:0 auto;padding:0 24px}
h1{margin:0;font-size:26px;font-weight:650;letter-spacing:-.01em}
.sub{margin:4px 0 16px;color:#bcccdc}
h2{margin:0 0 8px;font-size:19px}
h3{margin:0;font-size:17px;font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
h4{margin:10px 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.06em;color:var(--muted)}
.facts{display:flex;flex-wrap:wrap;gap:10px;margin:0}
.facts div{background:rgba(255,255,255,.09);border-radius:8px;padding:6px 12px;min-width:96px}
.facts dt{font-size:11px;text-transform:uppercase;letter-spacing:.06em;opacity:.75}
.facts dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.facts.light div{background:var(--bg)}
.card{background:#fff;border:1px solid var(--line);border-radius:12px;padding:20px 24px;margin:18px 0;box-shadow:0 1px 3px rgba(16,42,67,.06)}
.lead{margin:0 0 14px;color:var(--muted);max-width:860px}
.callout{background:#eef6fc;border-left:4px solid var(--accent);padding:8px 14px;border-radius:6px}
.callout.warn{background:#fff7e6;border-color:#e69f00}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.9em;background:var(--bg);padding:1px 5px;border-radius:4px}
table.owners{border-collapse:collapse;width:100%;max-width:860px}
.owners th,.owners td{padding:6px 10px;border-bottom:1px solid var(--line);text-align:left}
.owners th{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted);font-weight:600}
.num{text-align:right!important;font-variant-numeric:tabular-nums}
.bar{display:inline-block;width:220px;height:10px;background:var(--bg);border-radius:5px;overflow:hidden;vertical-align:middle}
.bar span{display:block;height:100%}
.badge{display:inline-block;padding:1px 9px;border-radius:999px;font-size:12px;font-weight:600;color:#fff;white-space:nowrap;line-height:1.6}
.muted{color:var(--muted)}
.small{font-size:12px;margin:2px 0 0}
.plots{display:flex;flex-wrap:wrap;gap:18px;margin-top:16px}
.plots figure{flex:1 1 420px;min-width:0}
figure{margin:0}
.plots img{width:100%;height:auto;border:1px solid var(--line);border-radius:8px}
figure.wide img{width:100%;height:auto;border:1px solid var(--line);border-radius:8px;margin-top:12px}
figcaption{font-size:12px;color:var(--muted);margin-top:4px}
img.px{image-rendering:pixelated}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(128px,1fr));gap:10px}
.tile{display:flex;flex-direction:column;align-items:center;gap:4px;padding:10px 6px;border:1px solid var(--line);border-radius:10px;text-decoration:none;color:inherit;background:#fff}
.tile:hover{border-color:var(--accent)}
.tile img{border-radius:6px;background:#fff}
.tid{font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;text-align:center;word-break:break-all}
.match{font-weight:700;margin-left:6px}
.match.ok{color:var(--good)}
.match.no{color:var(--bad)}
.thead{display:flex;flex-wrap:wrap;align-items:baseline;gap:6px 14px;margin-bottom:8px}
.caption{color:var(--muted);font-style:italic}
.tbody{display:grid;grid-template-columns:150px 340px 1fr;gap:22px;align-items:start}
.timg img{border:1px solid var(--line);border-radius:10px;background:#fff;padding:10px;width:148px;height:148px}
.sharebar{display:block;border-radius:6px;overflow:hidden}
.legend{list-style:none;padding:0;margin:8px 0 0;display:grid;grid-template-columns:1fr;gap:3px}
.legend li{display:grid;grid-template-columns:1fr 70px 90px;align-items:center;font-size:13px}
.legend .badge{justify-self:start}
.hist text{font-size:10px;fill:var(--muted);font-family:system-ui,sans-serif}
.thumbs{list-style:none;padding:0;margin:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(112px,1fr));gap:10px}
.thumbs li{display:flex;flex-direction:column;align-items:center;gap:3px;border:1px solid var(--line);border-radius:10px;padding:8px 4px;font-size:12px;text-align:center}
.thumbs img{background:#fff}
.sid{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:11px;word-break:break-all;color:var(--muted)}
.val{font-variant-numeric:tabular-nums;font-weight:600}
.val.pos{color:var(--good)}.val.neg{color:var(--bad)}
footer{max-width:1180px;margin:0 auto;padding:10px 24px 40px;color:var(--muted);font-size:12px}
footer p{margin:2px 0}
@media (max-width:900px){.tbody{grid-template-columns:1fr}}
"""
