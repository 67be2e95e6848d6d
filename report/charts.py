"""The run-level plots as PNG bytes (matplotlib, Agg; no global pyplot state).

Figures are built on `matplotlib.figure.Figure` with the Agg canvas directly, so
nothing depends on a display or on a backend chosen elsewhere in the process; PNG
metadata naming the matplotlib version is dropped so the same run gives the same bytes.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

from royalty.report.stats import Efficiency, OwnerShare

INK = "#1f2933"
MUTED = "#7b8794"
GRID = "#e4e7eb"
VALUE_COLOUR = "#0072B2"
ACTUAL_COLOUR = "#D55E00"
MAX_BARS = 20
DPI = 110
TICK_GAP_PX = 6  # the least room between two x tick labels, as drawn


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.grid(True, color=GRID, linewidth=0.8)
        ax.set_axisbelow(True)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        for side in ("left", "bottom"):
            ax.spines[side].set_color(MUTED)
        ax.tick_params(colors=INK, labelsize=9)
    return fig, axes


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white", metadata={"Software": None})
    return buf.getvalue()


def efficiency_png(eff: Efficiency) -> bytes:
    fig, (per_step, cumulative) = _figure(10.5, 3.6, ncols=2)
    per_step.axhline(0, color=MUTED, linewidth=0.8)
    per_step.plot(eff.steps, eff.value_sum, color=VALUE_COLOUR, linewidth=1.6, marker="o", markersize=2.5, label="Σ values (value_sum)")
    if eff.n_measured:
        m = eff.measured
        per_step.plot(eff.steps[m], eff.actual[m], color=ACTUAL_COLOUR, linewidth=1.6, marker="o", markersize=2.5, label="target-loss change (before − after)")
        if eff.unattributed is not None:
            per_step.plot(eff.steps[m], eff.unattributed[m], color=MUTED, linewidth=1.2, linestyle="--", label="unattributed")
    per_step.set_title("per step", color=INK, fontsize=11, loc="left")
    per_step.set_xlabel("step", color=INK, fontsize=9)
    per_step.set_ylabel("target-loss units", color=INK, fontsize=9)
    per_step.legend(fontsize=8, frameon=False)

    cumulative.axhline(0, color=MUTED, linewidth=0.8)
    if eff.n_measured:
        steps, cum_value, cum_actual = eff.cumulative()
        cumulative.plot(steps, cum_value, color=VALUE_COLOUR, linewidth=2, label="Σ values, running total")
        cumulative.plot(steps, cum_actual, color=ACTUAL_COLOUR, linewidth=2, label="loss change, running total")
        if eff.unattributed is not None:
            cum_both = cum_value + np.cumsum(eff.unattributed[eff.measured])
            cumulative.plot(steps, cum_both, color=VALUE_COLOUR, linewidth=1.2, linestyle="--", label="Σ values + unattributed")
        cumulative.legend(fontsize=8, frameon=False)
    else:
        cumulative.text(0.5, 0.5, "target loss not measured per step", ha="center", va="center", color=MUTED, transform=cumulative.transAxes)
    cumulative.set_title("cumulative (measured steps)", color=INK, fontsize=11, loc="left")
    cumulative.set_xlabel("step", color=INK, fontsize=9)
    return _png(fig)


def owner_shares_png(shares: tuple[OwnerShare, ...], colours: dict[str, str]) -> bytes:
    shown = list(shares[:MAX_BARS])
    rest = shares[MAX_BARS:]
    labels = [s.owner for s in shown]
    widths = [100 * s.share for s in shown]
    bar_colours = [colours[s.owner] for s in shown]
    if rest:
        labels.append(f"{len(rest)} others")
        widths.append(100 * sum(s.share for s in rest))
        bar_colours.append(MUTED)
    # As tall as the value histogram beside it on the page, taller when owners need the room.
    fig, (ax,) = _figure(6.4, max(3.4, 0.5 + 0.42 * len(labels)))
    y = np.arange(len(labels))[::-1]
    ax.barh(y, widths, color=bar_colours, height=0.66)
    ax.set_yticks(y, labels)
    # Room to the right of the longest bar for its label.
    ax.set_xlim(0, max(widths, default=1.0) * 1.22 + 1)
    for yi, w in zip(y, widths):
        ax.text(w, yi, f" {w:.1f} %", va="center", ha="left", fontsize=9, color=INK)
    ax.set_xlabel("share of the revenue (%)", color=INK, fontsize=9)
    ax.grid(False, axis="y")
    return _png(fig)


def _fit_x_ticks(fig: Figure, ax) -> None:
    """As many x ticks as fit: labels compact (a shared ×10^n beyond 1e-3..1e4) and never overlapping.

    Draws the figure to measure the labels, and takes fewer ticks until each label has
    TICK_GAP_PX to its neighbour.
    """
    formatter = ScalarFormatter()
    formatter.set_powerlimits((-3, 4))
    ax.xaxis.set_major_formatter(formatter)
    for nbins in (8, 6, 5, 4, 3, 2, 1):
        ax.xaxis.set_major_locator(MaxNLocator(nbins=nbins, steps=[1, 2, 2.5, 5, 10]))
        fig.canvas.draw()
        if x_tick_gaps(fig, ax) >= TICK_GAP_PX:
            return


def x_tick_gaps(fig: Figure, ax) -> float:
    """The smallest room in pixels between two drawn x tick labels (inf with fewer than two)."""
    renderer = fig.canvas.get_renderer()
    boxes = sorted(
        (label.get_window_extent(renderer) for label in ax.xaxis.get_ticklabels() if label.get_visible() and label.get_text()),
        key=lambda box: box.x0,
    )
    return min((b.x0 - a.x1 for a, b in zip(boxes, boxes[1:])), default=float("inf"))


def value_hist_png(values: np.ndarray, owner_codes: np.ndarray, owners: tuple[str, ...], colours: dict[str, str], column: str) -> bytes:
    return _png(value_hist_figure(values, owner_codes, owners, colours, column))


def value_hist_figure(values: np.ndarray, owner_codes: np.ndarray, owners: tuple[str, ...], colours: dict[str, str], column: str) -> Figure:
    fig, (ax,) = _figure(6.4, 3.4)
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 1e-12, hi + 1e-12
    bins = np.linspace(lo, hi, 61)
    if len(owners) <= len(set(colours.values())):
        # Stacked by owner: whose images sit in the tails is the interesting part.
        groups = [values[owner_codes == g] for g in range(len(owners))]
        ax.hist(groups, bins=bins, stacked=True, color=[colours[o] for o in owners], label=list(owners))
        ax.legend(fontsize=8, frameon=False, ncols=2 if len(owners) > 4 else 1)
    else:
        ax.hist(values, bins=bins, color=VALUE_COLOUR)
    ax.axvline(0, color=INK, linewidth=0.9, linestyle="--")
    ax.set_xlabel(f"{column} of one training image for one target", color=INK, fontsize=9)
    ax.set_ylabel("count", color=INK, fontsize=9)
    _fit_x_ticks(fig, ax)
    return fig
