"""The report's histograms: axis labels never overprint each other (issue 21)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from royalty.report import charts, svg
from royalty.report.stats import Histogram

# html.py draws the SVG labels at 10 px system-ui: a character is about 0.6 em wide at most
CHAR_PX = 0.6 * 10
OWNERS = ("fluent", "noto", "openmoji", "twemoji")
COLOURS = dict(zip(OWNERS, ("#E69F00", "#56B4E9", "#009E73", "#F0E442")))


def svg_labels(markup: str) -> list[tuple[float, float, str]]:
    """(left, right, text) of every <text>, from its x, text-anchor and length."""
    out = []
    for x, anchor, text in re.findall(r'<text x="([^"]+)"[^>]*text-anchor="(\w+)">([^<]*)</text>', markup):
        w, x = len(text) * CHAR_PX, float(x)
        left = {"start": x, "end": x - w, "middle": x - w / 2}[anchor]
        out.append((left, left + w, text))
    return sorted(out)


def assert_apart(labels: list[tuple[float, float, str]]) -> None:
    for (_, right, a), (left, _, b) in zip(labels, labels[1:]):
        assert left - right > 0, f"{a!r} and {b!r} overlap: {labels}"


def histogram(lo: float, hi: float) -> str:
    edges = tuple(np.linspace(lo, hi, 21).tolist())
    return svg.histogram(Histogram(edges, tuple([3] * 20)))


@pytest.mark.parametrize(
    ("lo", "hi"),
    [
        (-1.234e-5, 1.0e-4),  # 0 sits 35 px in: the old code wrote "0" over "-1.2e-05"
        (-1.0e-4, 1.234e-5),  # the same at the right end
        (-0.5, 0.5),
        (-123456.0, 0.01),
        (3e-7, 9e-6),  # all positive: no 0 label
    ],
)
def test_svg_histogram_labels_never_overlap(lo: float, hi: float) -> None:
    labels = svg_labels(histogram(lo, hi))
    assert_apart(labels)
    texts = [text for *_, text in labels]
    assert svg.tick_label(lo) in texts and svg.tick_label(hi) in texts  # min and max always shown
    if lo < 0 < hi and -lo / (hi - lo) == 0.5:
        assert "0" in texts  # room in the middle: 0 is labelled


@settings(max_examples=200, deadline=None)
@given(
    lo=st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x == 0 or abs(x) > 1e-12),
    width=st.floats(1e-9, 2e6, allow_nan=False),
)
def test_svg_histogram_labels_never_overlap_for_any_range(lo: float, width: float) -> None:
    assert_apart(svg_labels(histogram(lo, lo + width)))


def test_svg_labels_are_compact() -> None:
    assert svg.tick_label(-1.234e-5) == "-1.2e-5" and svg.tick_label(0.5) == "0.5" and svg.tick_label(2.5e12) == "2.5e12"


@pytest.mark.parametrize(
    ("scale", "shift"),
    [(3.4e-5, 1.0e-4), (1.5e-6, 1.7e-6), (1.2e-4, 3.6e-5), (3.3, 0.0), (2e-9, 7e-3)],
)
def test_png_histogram_tick_labels_never_overlap(scale: float, shift: float) -> None:
    """Measured on the drawn figure; the first two ranges overprinted before (0.000025 … 0.000225)."""
    rng = np.random.default_rng(0)
    values = rng.normal(shift, scale, 400)
    fig = charts.value_hist_figure(values, rng.integers(0, 4, 400), OWNERS, COLOURS, "value")
    ax = fig.axes[0]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = []
    for label in ax.xaxis.get_ticklabels():
        if label.get_visible() and label.get_text():
            box = label.get_window_extent(renderer)
            boxes.append((box.x0, box.x1, label.get_text()))
    boxes.sort()
    assert len(boxes) >= 3
    assert_apart(boxes)
