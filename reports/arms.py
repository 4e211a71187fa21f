"""Arms of a report and their names: which method (shown by its display name, in report order) and which
weights file a run belongs to.

Methods are plugins, so reports know none by name. bench logs three tags per run: ``method_display``
(how to show the method), ``method_order`` (an integer: its place in tables and plots) and
``method_baseline`` ("true" for the method every other is tested against). Runs from before the tags
fall back to the raw method name, sort after the tagged methods (alphabetically) and name no baseline,
so a store of such runs gets no paired tests. The references are the harness's own arms, not methods,
so they are named here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

DISPLAY, ORDER, BASELINE = "method_display", "method_order", "method_baseline"
METHOD_TAGS = (DISPLAY, ORDER, BASELINE)
UNTRAINED, SUPERVISED = "random_init", "supervised"  # the references bench runs beside the methods
NAN = float("nan")


def method_tags(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method (the index), its display name, order (NaN: not tagged) and whether it is the baseline.

    A method's values come from its most recent run that logged a display name, so runs of one method
    from before and after the tags share them; a method none of whose runs logged one falls back.
    Works on raw tag strings (as MLflow stores them, '' for absent) and on already resolved columns.
    """
    if "start_time" in frame:
        frame = frame.sort_values("start_time", kind="stable", na_position="first")
    rows = {}
    for method, group in frame.groupby("method", sort=False):
        shown = group[DISPLAY].fillna("").astype(str) if DISPLAY in group else pd.Series("", index=group.index)
        tagged = group[shown != ""]
        if tagged.empty:
            rows[method] = (str(method), NAN, False)
        else:
            last = tagged.iloc[-1]
            rows[method] = (str(last[DISPLAY]), _number(last.get(ORDER)), _flag(last.get(BASELINE)))
    table = pd.DataFrame.from_dict(rows, orient="index", columns=list(METHOD_TAGS))
    return table.astype({DISPLAY: object, ORDER: float, BASELINE: bool})


def resolve_method_tags(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the three tag columns filled per method (see ``method_tags``): display a string,
    order a float (NaN where no run of the method logged it), baseline a bool."""
    tags = method_tags(frame)
    return frame.assign(
        **{
            DISPLAY: frame["method"].map(tags[DISPLAY]).astype(object),
            ORDER: frame["method"].map(tags[ORDER]).astype(float),
            BASELINE: frame["method"].map(tags[BASELINE]).fillna(False).astype(bool),
        }
    )


def _number(value: object) -> float:
    number = pd.to_numeric(pd.Series([value]), errors="coerce").iloc[0]
    return float(number) if pd.notna(number) else NAN


def _flag(value: object) -> bool:
    return str(value).strip().lower() == "true"


@dataclass(frozen=True)
class Methods:
    """The methods of a set of runs as a report shows them: display names, report order, the baseline."""

    display: dict[str, str]
    order: dict[str, float]
    references: frozenset[str]
    baseline: str | None

    @classmethod
    def of(cls, frame: pd.DataFrame) -> Methods:
        """From a run frame (any columns missing: the fallbacks). Should several methods claim to be the
        baseline (mixed stores), the first in report order is."""
        tags = method_tags(frame) if "method" in frame else method_tags(pd.DataFrame({"method": []}))
        references = (
            frozenset(frame.loc[frame["reference"].fillna(False).astype(bool), "method"])
            if "reference" in frame
            else ()
        )
        methods = cls(tags[DISPLAY].to_dict(), tags[ORDER].to_dict(), frozenset(references), None)
        claims = [m for m in tags.index if tags.at[m, BASELINE] and m not in methods.references]
        if not claims:
            return methods
        return cls(methods.display, methods.order, methods.references, methods.in_order(claims)[0])

    def name(self, method: str) -> str:
        return self.display.get(method, str(method))

    def tagged(self, method: str) -> bool:
        return math.isfinite(self.order.get(method, NAN))

    def sort_key(self, method: str, reference: bool = False) -> tuple[int, int, float, str]:
        """References after the methods; tagged methods by their order, then the untagged by name."""
        order = self.order.get(method, NAN)
        known = math.isfinite(order)
        return (int(reference or method in self.references), int(not known), order if known else 0.0, str(method))

    def arm_sort_key(self, method: str, reference: bool = False, weights: str = "") -> tuple:
        """Methods in report order, each from scratch before its runs from weights files."""
        return (*self.sort_key(method, reference), weights)

    def in_order(self, methods: Iterable[str]) -> list[str]:
        return sorted(set(methods), key=self.sort_key)

    def sort_by_arm(self, frame: pd.DataFrame, leading: tuple[str, ...] = ()) -> pd.DataFrame:
        """Rows in report order: by the leading columns, then by method and weights (stable, ties keep order)."""

        def key(i: int) -> tuple:
            row = frame.iloc[i]
            arm = self.arm_sort_key(row["method"], bool(row.get("reference", False)), row.get("weights", ""))
            return (*(row[c] for c in leading), arm)

        return frame.iloc[sorted(range(len(frame)), key=key)]

    def arm(self, method: str, weights: str = "") -> str:
        return arm_name(self.name(method), weights)

    def label(self, method: str, reference: bool, weights: str = "") -> str:
        return method_label(self.name(method), reference, weights)

    def kind(self, method: str, weights: str = "") -> str:
        return reference_kind(method, weights, self.name(method))

    @property
    def baseline_name(self) -> str:
        """The baseline's display name, or a neutral word where there is none."""
        return self.name(self.baseline) if self.baseline is not None else "the baseline"


def short_sha(weights: str) -> str:
    return weights[:8]


def arm_name(display: str, weights: str = "") -> str:
    """A method (by its display name) and the weights file it started from, if any: runs from other
    weights are another arm."""
    return f"{display} (weights {short_sha(weights)})" if weights else display


def method_label(display: str, reference: bool, weights: str = "") -> str:
    notes = (["reference"] if reference else []) + ([f"weights {short_sha(weights)}"] if weights else [])
    return f"{display} ({', '.join(notes)})" if notes else display


def reference_kind(method: str, weights: str = "", display: str | None = None) -> str:
    """What a reference stands for: only random_init without a weights file is an untrained backbone."""
    if method == UNTRAINED:
        return f"pretrained weights {short_sha(weights)}" if weights else "untrained"
    if method == SUPERVISED:
        return f"supervised from pretrained weights {short_sha(weights)}" if weights else "supervised from scratch"
    name = display or method
    return f"{name} from pretrained weights {short_sha(weights)}" if weights else name


def baseline_weights(weights: Iterable[str]) -> str | None:
    """The baseline arm the others are tested against: from scratch if it ran, else the first weights file."""
    present = sorted(set(weights))
    if not present:
        return None
    return "" if "" in present else present[0]
