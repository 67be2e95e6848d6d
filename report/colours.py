"""One colour per owner, the same in every chart and badge of a report."""

from __future__ import annotations

# Colour-blind-friendly qualitative palette (Okabe–Ito, then Tableau), dark enough for white text.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
    "#8C564B", "#7F7F7F", "#BCBD22", "#17BECF", "#9467BD", "#2CA02C",
)


def owner_colours(owners: tuple[str, ...] | list[str]) -> dict[str, str]:
    """Owners in sorted order take palette colours in turn (cycling beyond twelve)."""
    return {owner: PALETTE[i % len(PALETTE)] for i, owner in enumerate(sorted(owners))}
