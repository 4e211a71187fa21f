"""The summary claims only what the data shows: the tie rule, claims against chance and the majority
class, batch-size sensitivity compared only by a test, no sentence twice; and the baselines themselves,
checked against values computed by hand."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from scipy import stats as sps

from reports import claims
from reports.arms import Methods, resolve_method_tags
from reports.baselines import class_baselines, counts_from_report, setting_baselines
from reports.claims import leader, sensitivity_verdict
from reports.comparison import cell_stats, comparisons
from reports.result_tables import sensitivity_table
from reports.stats import SlopeDifference, Summary, Trend, slope_difference
from reports.summary import summary_paragraph

METRIC = "knn.test.balanced_accuracy"
TAGS = {"zeta": ("Zeta-SSL", "0", "true"), "alpha": ("Alpha", "10", "false"), "beta": ("Beta", "20", "false")}


def cell(mean: float, low: float = math.nan, high: float = math.nan, n: int = 3) -> Summary:
    return Summary(n, mean, 0.01, low, high)


def test_majority_and_chance_by_hand():
    isic = class_baselines([117, 90, 393])  # the ISIC 2017 test split
    assert isic[("majority", "accuracy")] == pytest.approx(0.655)
    assert isic[("majority", "balanced_accuracy")] == pytest.approx(1 / 3)
    assert isic[("chance", "accuracy")] == isic[("chance", "balanced_accuracy")] == pytest.approx(1 / 3)
    absent = class_baselines([0, 5, 15])  # a class without test images: the majority's recall averages over 2
    assert absent[("majority", "accuracy")] == 0.75 and absent[("majority", "balanced_accuracy")] == 0.5
    assert absent[("chance", "accuracy")] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="positive count"):
        class_baselines([0, 0])


def test_class_counts_from_a_test_report():
    per_class = [{"class": "a", "support": 3}, {"class": "b", "support": 1}]
    assert counts_from_report({"per_class": per_class, "confusion_matrix": [[9]]}) == [3, 1]
    assert counts_from_report({"confusion_matrix": [[2, 1], [0, 4]]}) == [3, 4]  # true classes are the rows
    assert counts_from_report({"protocol": "knn"}) is None


def test_baselines_logged_then_reported_then_given_then_missing():
    runs = pd.DataFrame(
        {
            "run_id": ["r1", "r2", "r3", "r4", "r5"],
            "status": ["FINISHED"] * 5,
            "setting": ["logged", "logged", "reported", "given", "nothing"],
            "dataset": ["logged", "logged", "reported", "isic", "nothing"],
            "baseline.majority.test.accuracy": [0.6, 0.6, math.nan, math.nan, math.nan],
            "baseline.chance.test.accuracy": [0.25, 0.25, math.nan, math.nan, math.nan],
        }
    )
    asked = []

    def fetch(run_id: str, protocol: str) -> dict | None:
        asked.append((run_id, protocol))
        return {"confusion_matrix": [[1, 0], [2, 1]]} if (run_id, protocol) == ("r3", "linear") else None

    table = setting_baselines(runs, fetch, {"isic": [117, 90, 393]})
    got = {(r.setting, r.baseline, r.metric): r.value for r in table.itertuples()}
    assert got[("logged", "majority class", "accuracy")] == 0.6
    assert got[("logged", "chance", "accuracy")] == 0.25
    assert ("logged", "majority class", "balanced_accuracy") not in got  # not logged, not guessed
    assert got[("reported", "majority class", "accuracy")] == pytest.approx(3 / 4)
    assert got[("reported", "majority class", "balanced_accuracy")] == 0.5
    assert got[("given", "majority class", "accuracy")] == pytest.approx(0.655)
    assert "nothing" not in set(table["setting"])
    assert ("r1", "knn") not in asked  # logged values need no artifact
    sources = dict(zip(table["setting"], table["source"], strict=False))
    assert sources["reported"] == "from the runs' test reports" and "117" in sources["given"]


def test_tie_rule():
    at_chance = {"a": cell(0.266, 0.266, 0.266), "b": cell(0.266, 0.266, 0.266), "c": cell(0.266, 0.266, 0.266)}
    assert leader(at_chance) == claims.Leader(claims.TIED, ["a", "b", "c"])  # equal means: never a best
    clear = {"b": cell(0.40, 0.38, 0.42), "a": cell(0.50, 0.48, 0.52)}
    assert leader(clear) == claims.Leader(claims.BEST, ["a"])
    overlap = {"a": cell(0.50, 0.45, 0.55), "b": cell(0.46, 0.44, 0.48), "c": cell(0.30, 0.28, 0.32)}
    assert leader(overlap) == claims.Leader(claims.TIED, ["a", "b"])  # c is clearly below: not tied
    wide_third = {"a": cell(0.50, 0.48, 0.52), "b": cell(0.45, 0.44, 0.46), "c": cell(0.30, 0.0, 0.6)}
    assert leader(wide_third) == claims.Leader(claims.TIED, ["a", "c"])  # clearing the runner-up is not enough
    one_seed = {"a": cell(0.9, n=1), "b": cell(0.1, n=1)}
    assert leader(one_seed).verdict == claims.NO_INTERVAL
    assert leader({"a": cell(0.5, 0.4, 0.6)}).verdict == claims.ALONE


def test_position_against_a_score():
    assert claims.position(cell(0.5, 0.45, 0.55), 1 / 3) == "above"
    assert claims.position(cell(0.35, 0.30, 0.40), 1 / 3) == "within"
    assert claims.position(cell(0.6, 0.58, 0.62), 0.655) == "below"
    assert claims.position(cell(0.9, n=1), 0.5) is None


def test_slope_difference_by_hand():
    a = Trend(4, 2, 0.1, 0.03, 0.01, math.nan, math.nan)
    b = Trend(5, 3, 0.1, 0.01, 0.02, math.nan, math.nan)
    d = slope_difference(a, b)
    se = math.sqrt(0.01**2 + 0.02**2)  # 0.022361
    assert (d.diff, d.df) == (pytest.approx(0.02), 5) and d.se == pytest.approx(0.0223607, abs=1e-7)
    assert d.p == pytest.approx(2 * sps.t.sf(0.02 / se, 5)) and d.p == pytest.approx(0.4121, abs=1e-4)
    assert d.ci_low == pytest.approx(0.02 - 2.570582 * se, abs=1e-6)
    assert slope_difference(a, b, plus=True).diff == pytest.approx(0.04)
    assert math.isnan(slope_difference(a, Trend(2, 2, 0.1, 0.0, math.nan, math.nan, math.nan)).p)


def test_sensitivity_verdict_needs_both_tests():
    def sd(diff: float) -> SlopeDifference:
        return SlopeDifference(diff, 0.01, 10, 0.0, 0.0, 0.0)

    # a = +0.005, b = +0.030: difference -0.025 and sum +0.035 have opposite signs, so |a| < |b|
    assert sensitivity_verdict(sd(-0.025), sd(0.035), 0.01, 0.01) == claims.LESS
    assert sensitivity_verdict(sd(0.04), sd(0.06), 0.01, 0.01) == claims.MORE  # a = 0.05, b = 0.01
    # opposite slopes of similar size (a = -0.007, b = +0.010): they differ, but neither is flatter by a test
    assert sensitivity_verdict(sd(-0.017), sd(0.003), 0.04, 0.7) == claims.DIFFERS
    assert sensitivity_verdict(sd(-0.025), sd(0.035), 0.2, 0.01) == claims.CANNOT_TELL
    assert sensitivity_verdict(sd(-0.025), sd(0.035), math.nan, 0.01) == claims.CANNOT_TELL


def frame(rows: list[tuple[str, int, int, float]]) -> pd.DataFrame:
    """Finished main runs: (method, batch size, seed, value of METRIC)."""
    data = pd.DataFrame(rows, columns=["method", "batch_size", "seed", METRIC])
    tags = data["method"].map(TAGS)
    data = data.assign(
        setting="synthetic",
        status="FINISHED",
        variant="",
        weights="",
        reference=False,
        method_display=tags.str[0],
        method_order=tags.str[1],
        method_baseline=tags.str[2],
    )
    return resolve_method_tags(data)


def summary_of(runs: pd.DataFrame, baselines: pd.DataFrame | None = None) -> str:
    return summary_paragraph(
        cell_stats(runs, [METRIC]),
        comparisons(runs, [METRIC]),
        sensitivity_table(runs, [METRIC]).data,
        [METRIC],
        Methods.of(runs),
        baselines,
    )


def sentences(text: str) -> list[str]:
    return [s.strip().removeprefix("- ") for s in re.split(r"(?<=\.)\s+|\n", text) if s.strip()]


def test_no_best_at_chance_and_chance_is_named():
    runs = frame([(m, 32, s, 0.266) for m in TAGS for s in (0, 1, 2)])
    baselines = pd.DataFrame(
        [("synthetic", name, "balanced_accuracy", 0.25, "logged") for name in ("majority class", "chance")],
        columns=["setting", "baseline", "metric", "value", "source"],
    )
    text = summary_of(runs, baselines)
    assert " is best " not in text and "No best knn balanced accuracy: Zeta-SSL (0.266)" in text
    assert "Alpha (0.266) and Beta (0.266) are tied" in text
    assert "majority class: balanced accuracy 0.250" in text and "chance: balanced accuracy 0.250" in text
    assert "Against majority class and chance (0.250)" in text and "above: Zeta-SSL, Alpha and Beta" in text


def test_a_best_is_named_only_outside_the_others_intervals():
    runs = frame([(m, 32, s, level + 0.001 * s) for m, level in (("zeta", 0.4), ("alpha", 0.6)) for s in (0, 1, 2)])
    assert "Alpha is best on knn balanced accuracy" in summary_of(runs)
    one_seed = frame([("zeta", 32, 0, 0.4), ("alpha", 32, 0, 0.6)])
    text = summary_of(one_seed)
    assert " is best " not in text and "fewer than 2 seeds leave no interval" in text
    assert "majority/chance not logged" in text.lower() and text.lower().count("majority/chance not logged") == 1


def sweep(slopes: dict[str, float], noise: float) -> pd.DataFrame:
    """Three seeds at batch sizes 16-128, value = 0.5 + slope * log2(b / 16) + a fixed zig-zag of seed noise."""
    wiggle = {0: -1.0, 1: 0.0, 2: 1.0}
    rows = [
        (m, b, s, 0.5 + slope * math.log2(b / 16) + noise * wiggle[(s + i) % 3])
        for m, slope in slopes.items()
        for s in (0, 1, 2)
        for i, b in enumerate((16, 32, 64, 128))
    ]
    return frame(rows)


def test_no_sensitivity_comparison_without_a_test():
    text = summary_of(sweep({"zeta": 0.0, "alpha": -0.01, "beta": 0.005}, noise=0.05))
    assert "is less sensitive" not in text and "is more sensitive" not in text
    assert "Whether Zeta-SSL is more or less sensitive than Alpha and Beta the data cannot tell" in text


def test_a_sensitivity_claim_the_tests_support():
    text = summary_of(sweep({"zeta": 0.0, "alpha": -0.05}, noise=0.002))
    assert "Zeta-SSL is less sensitive to batch size than Alpha (slope difference +0.050" in text
    assert "which contains 0: no batch-size effect shown" in text


def test_no_sentence_is_said_twice():
    runs = sweep({"zeta": 0.0, "alpha": -0.01, "beta": 0.005}, noise=0.05)
    other = sweep({"zeta": 0.01, "alpha": -0.02, "beta": 0.0}, noise=0.04).assign(setting="other")
    runs = pd.concat([runs, other], ignore_index=True)
    said = sentences(summary_of(runs))
    assert len(said) > 10 and len(said) == len(set(said)), [s for s in said if said.count(s) > 1]
