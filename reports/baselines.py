"""What a model that learned nothing scores on a test split: always answering the most frequent class
(majority) and guessing uniformly (chance). Every method's number is read against these.

bench logs them per run (``baseline.<majority|chance>.<split>.<accuracy|balanced_accuracy>``); for runs
from before that, the test split's class counts come from a run's ``<protocol>_test_report.json``
(per-class support, else the confusion matrix's row sums), or are given by the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from reports.collect import PROTOCOLS, finished

MAJORITY, CHANCE = "majority", "chance"
KINDS = {MAJORITY: "majority class", CHANCE: "chance"}
SCORES = ("accuracy", "balanced_accuracy")
COLUMNS = ["setting", "baseline", "metric", "value", "source"]
NOT_LOGGED = "majority/chance not logged"
REPORTS_TRIED = 5  # runs per setting whose artifacts are looked at before giving up: old stores have none

ReportFetcher = Callable[[str, str], dict | None]  # (run_id, protocol) -> the run's test report, or None


def metric_name(kind: str, score: str, split: str = "test") -> str:
    return f"baseline.{kind}.{split}.{score}"


def class_baselines(counts: Sequence[int]) -> dict[tuple[str, str], float]:
    """(kind, score) -> value from a split's class counts (one per class the model can answer).

    Majority: accuracy is the largest class's share; balanced accuracy is 1/K over the K classes present
    (recall 1 on one class, 0 on the others). Chance (uniform over all classes): 1/K on both, expected.
    """
    total, present = sum(counts), sum(1 for c in counts if c > 0)
    if total <= 0 or not counts:
        raise ValueError(f"class counts must include a positive count, got {list(counts)}")
    return {
        (MAJORITY, "accuracy"): max(counts) / total,
        (MAJORITY, "balanced_accuracy"): 1 / present,
        (CHANCE, "accuracy"): 1 / len(counts),
        (CHANCE, "balanced_accuracy"): 1 / len(counts),
    }


def counts_from_report(report: dict) -> list[int] | None:
    """Test class counts from a test report as bench writes it (bench/metrics.py): per-class support,
    else the confusion matrix's row sums (true classes); None if it has neither."""
    per_class = report.get("per_class")
    if per_class and all("support" in c for c in per_class):
        return [int(c["support"]) for c in per_class]
    matrix = report.get("confusion_matrix")
    return [int(sum(row)) for row in matrix] if matrix else None


def setting_baselines(
    runs: pd.DataFrame,
    fetch: ReportFetcher | None = None,
    class_counts: Mapping[str, Sequence[int]] | None = None,
) -> pd.DataFrame:
    """One row per setting, baseline kind and score (columns ``COLUMNS``) for the test split: from the
    logged metrics, else the runs' test reports (``fetch``), else ``class_counts`` (by setting or dataset
    name). A setting none of these covers has no rows."""
    ok = finished(runs)
    rows = []
    for setting, group in ok.groupby("setting", sort=True):
        values, source = _logged(group), "logged by the runs"
        if not values and fetch is not None:
            counts = _reported_counts(group, fetch)
            values, source = (class_baselines(counts), "from the runs' test reports") if counts else ({}, "")
        if not values and class_counts:
            counts = class_counts.get(setting) or class_counts.get(str(group["dataset"].iloc[0]))
            if counts:
                values, source = class_baselines(counts), f"from the given test class counts {list(counts)}"
        rows += [(setting, KINDS[kind], score, value, source) for (kind, score), value in values.items()]
    return pd.DataFrame(rows, columns=COLUMNS)


def _logged(group: pd.DataFrame) -> dict[tuple[str, str], float]:
    values = {}
    for kind in KINDS:
        for score in SCORES:
            column = metric_name(kind, score)
            logged = group[column].dropna() if column in group else pd.Series(dtype=float)
            if len(logged):
                values[(kind, score)] = float(logged.median())  # one split, so every run logs the same
    return values


def _reported_counts(group: pd.DataFrame, fetch: ReportFetcher) -> list[int] | None:
    for run_id in group["run_id"].head(REPORTS_TRIED):
        for protocol in PROTOCOLS:
            report = fetch(run_id, protocol)
            counts = counts_from_report(report) if report else None
            if counts:
                return counts
    return None


@dataclass(frozen=True)
class BaselineScore:
    """A baseline score to read a metric against: its name ('majority class', 'chance') and value."""

    name: str
    value: float


def scores_for(baselines: pd.DataFrame, setting: str, metric: str) -> list[BaselineScore]:
    """The baselines of a ``<protocol>.test.<score>`` metric on a setting, highest first (none for
    scores without a baseline, such as AUC)."""
    score = metric.split(".")[-1]
    rows = baselines[(baselines["setting"] == setting) & (baselines["metric"] == score)]
    found = [BaselineScore(r.baseline, float(r.value)) for r in rows.itertuples()]
    return sorted(found, key=lambda r: -r.value)


def baseline_sentence(baselines: pd.DataFrame, setting: str) -> str | None:
    """'majority class: accuracy 0.655, balanced accuracy 0.333; chance: ...' for one setting."""
    rows = baselines[baselines["setting"] == setting]
    if rows.empty:
        return None
    parts = []
    for name in KINDS.values():
        of_kind = rows[rows["baseline"] == name].set_index("metric")["value"]
        scores = ", ".join(f"{s.replace('_', ' ')} {of_kind[s]:.3f}" for s in SCORES if s in of_kind)
        if scores:
            parts.append(f"{name}: {scores}")
    return "; ".join(parts)
