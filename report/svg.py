"""Small inline SVG charts for each target card: crisp at any zoom, a few hundred bytes each."""

from __future__ import annotations

from html import escape

from royalty.report.stats import Histogram, OwnerShare

POSITIVE = "#0072B2"
NEGATIVE = "#c3cad3"
AXIS = "#7b8794"
OTHERS = "#9aa5b1"
# The axis labels are 10 px system-ui (html.py's .hist text); a character is at most this
# wide there (digits and "e" about 5.6 px, "−" 6), so a label's width is len × this.
LABEL_CHAR_PX = 6.2
LABEL_GAP_PX = 6.0


def share_bar(shares: tuple[OwnerShare, ...], colours: dict[str, str], width: int = 320, height: int = 22) -> str:
    """One 100 % bar split by owner share (owners at or below 0 take no room)."""
    parts = []
    x = 0.0
    for s in shares:
        if s.share <= 0:
            continue
        w = s.share * width
        parts.append(
            f'<rect x="{x:.2f}" y="0" width="{w:.2f}" height="{height}" fill="{colours.get(s.owner, OTHERS)}">'
            f"<title>{escape(s.owner)}: {100 * s.share:.1f} %</title></rect>"
        )
        x += w
    if not parts:
        parts.append(f'<rect x="0" y="0" width="{width}" height="{height}" fill="{NEGATIVE}"><title>no owner positive</title></rect>')
    return (
        f'<svg class="sharebar" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="owner shares" preserveAspectRatio="none">{"".join(parts)}</svg>'
    )


def histogram(hist: Histogram, width: int = 320, height: int = 84) -> str:
    """Bars of the value distribution; bins above 0 blue, at or below 0 grey, a line at 0."""
    pad_bottom = 14
    plot_h = height - pad_bottom
    lo, hi = hist.edges[0], hist.edges[-1]
    span = (hi - lo) or 1.0
    top = max(hist.counts) or 1
    bar_w = width / len(hist.counts)
    parts = []
    for i, count in enumerate(hist.counts):
        if count == 0:
            continue
        h = max(1.0, plot_h * count / top)
        centre = (hist.edges[i] + hist.edges[i + 1]) / 2
        fill = POSITIVE if centre > 0 else NEGATIVE
        parts.append(
            f'<rect x="{i * bar_w + 0.5:.2f}" y="{plot_h - h:.2f}" width="{max(bar_w - 1, 0.5):.2f}" height="{h:.2f}" fill="{fill}">'
            f"<title>{count} value(s) in [{hist.edges[i]:.3g}, {hist.edges[i + 1]:.3g})</title></rect>"
        )
    # axis labels, most important first: min, max, then 0; one that would touch a kept one is left out
    labels = [(0.0, "start", tick_label(lo)), (float(width), "end", tick_label(hi))]
    if lo < 0 < hi:
        x0 = width * (0 - lo) / span
        parts.append(f'<line x1="{x0:.2f}" y1="0" x2="{x0:.2f}" y2="{plot_h}" stroke="#1f2933" stroke-width="1" stroke-dasharray="3 2"/>')
        labels.append((x0, "middle", "0"))
    parts.append(f'<line x1="0" y1="{plot_h + 0.5}" x2="{width}" y2="{plot_h + 0.5}" stroke="{AXIS}" stroke-width="1"/>')
    kept: list[tuple[float, float]] = []
    for x, anchor, text in labels:
        left, right = label_extent(x, anchor, text)
        if all(right + LABEL_GAP_PX <= a or b + LABEL_GAP_PX <= left for a, b in kept):
            kept.append((left, right))
            parts.append(f'<text x="{x:.2f}" y="{height - 2}" text-anchor="{anchor}">{escape(text)}</text>')
    return (
        f'<svg class="hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="distribution of values">{"".join(parts)}</svg>'
    )


def tick_label(x: float) -> str:
    """A compact axis label: two significant digits, exponent without padding ("-1.2e-5")."""
    text = f"{x:.2g}"
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


def label_extent(x: float, anchor: str, text: str) -> tuple[float, float]:
    """(left, right) of a label drawn at x with this text-anchor, by the LABEL_CHAR_PX estimate."""
    w = len(text) * LABEL_CHAR_PX
    return {"start": (x, x + w), "end": (x - w, x), "middle": (x - w / 2, x + w / 2)}[anchor]
