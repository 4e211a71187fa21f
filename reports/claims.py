"""The rules behind every claim of the summary, so that it says only what the data shows:

- a method is named best only when its 95% interval lies wholly above every other method's; equal
  means or overlapping intervals make a tie, and without intervals (fewer than 2 seeds) nothing is best;
- a method is above or below a score (chance, the majority class, a reference) only by its whole interval;
- one arm is less sensitive to batch size than another only when tests say the size of its slope is smaller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from reports.comparison import ALPHA
from reports.stats import SlopeDifference, Summary

BEST, TIED, NO_INTERVAL, ALONE = "best", "tied", "no interval", "alone"
LESS, MORE, DIFFERS, CANNOT_TELL = "less", "more", "differs", "cannot tell"


def has_interval(s: Summary) -> bool:
    return math.isfinite(s.ci_low) and math.isfinite(s.ci_high)


def wholly_above(a: Summary, b: Summary) -> bool:
    """a's 95% interval lies above b's (both defined, no overlap, so the means differ too)."""
    return has_interval(a) and has_interval(b) and a.ci_low > b.ci_high


@dataclass(frozen=True)
class Leader:
    """Who leads a cell: ``verdict`` BEST (``arms[0]`` is best), TIED (``arms`` cannot be told apart),
    NO_INTERVAL (an interval is missing, so nothing is best), or ALONE (one arm)."""

    verdict: str
    arms: list[str]


def leader(cells: Mapping[str, Summary]) -> Leader:
    """The best arm by the tie rule: the top mean is best only if its interval lies above every other
    arm's; the arms it does not clear are tied with it (equal means always are: their intervals overlap)."""
    ranked = sorted((k for k, s in cells.items() if s.n > 0), key=lambda k: -cells[k].mean)
    if len(ranked) < 2:
        return Leader(ALONE, ranked)
    top, others = ranked[0], ranked[1:]
    unclear = [k for k in others if not wholly_above(cells[top], cells[k])]
    if not unclear:
        return Leader(BEST, [top])
    defined = has_interval(cells[top]) and all(has_interval(cells[k]) for k in unclear)
    return Leader(TIED if defined else NO_INTERVAL, [top, *unclear])


def position(s: Summary, value: float) -> str | None:
    """'above' or 'below' a score by the whole 95% interval, 'within' when the interval holds it, None
    without an interval."""
    if not has_interval(s):
        return None
    return "above" if s.ci_low > value else "below" if s.ci_high < value else "within"


def sensitivity_verdict(
    difference: SlopeDifference, total: SlopeDifference, p_difference: float, p_total: float
) -> str:
    """How arm a's batch-size sensitivity (the size of its slope) compares with arm b's, from the tests of
    slope_a - slope_b (``difference``) and slope_a + slope_b (``total``) with their Holm-adjusted p-values.
    |slope_a| < |slope_b| exactly when the two have opposite signs, so LESS (or MORE) needs both to be
    significant; a significant difference alone (e.g. opposite slopes of similar size) is DIFFERS, and no
    significant difference CANNOT_TELL."""
    if not _significant(p_difference):
        return CANNOT_TELL
    if not _significant(p_total):
        return DIFFERS
    return LESS if difference.diff * total.diff < 0 else MORE


def _significant(p: float) -> bool:
    return math.isfinite(p) and p < ALPHA
