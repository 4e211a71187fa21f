"""Report statistics against hand-computed values and against scipy on the same numbers."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports.comparison import cell_stats, comparisons
from reports.stats import Summary, batch_size_trend, holm, paired_test, summarize
from reports.tableformat import format_cell


def test_summary_by_hand():
    s = summarize([1.0, 2.0, 3.0])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    half = 4.302652729911275 / math.sqrt(3)  # t(0.975, 2 df) * std / sqrt(n)
    assert s.ci_low == pytest.approx(2.0 - half) and s.ci_high == pytest.approx(2.0 + half)
    assert not s.few


def test_summary_matches_scipy_interval():
    values = [0.71, 0.74, 0.69, 0.77, 0.73]
    s = summarize(values)
    low, high = sps.t.interval(0.95, len(values) - 1, loc=np.mean(values), scale=sps.sem(values))
    assert (s.ci_low, s.ci_high) == pytest.approx((low, high))


def test_one_seed_has_no_spread_and_is_marked():
    s = summarize([0.5])
    assert s.n == 1 and s.mean == 0.5 and s.few
    assert all(math.isnan(v) for v in (s.std, s.ci_low, s.ci_high))
    assert format_cell(s) == "0.500\nn=1†"


def test_missing_values_do_not_count():
    assert summarize([0.4, float("nan"), 0.6]).n == 2
    empty = summarize([])
    assert empty.n == 0 and math.isnan(empty.mean)
    assert format_cell(empty) == "–"


def test_two_seeds_marked_and_formatted():
    cell = format_cell(Summary(2, 0.25, 0.05, 0.1, 0.4), mark="*")
    assert cell == "0.250 ± 0.050*\n[0.100, 0.400] n=2†"


def test_holm_by_hand_keeps_input_order():
    # sorted: 0.01 * 3 = 0.03, 0.03 * 2 = 0.06, 0.04 * 1 = 0.04 -> monotone 0.06
    assert holm([0.04, 0.01, 0.03]) == pytest.approx([0.06, 0.03, 0.06])


def test_holm_caps_at_one_and_skips_nan():
    adjusted = holm([0.6, float("nan"), 0.7, 0.01])  # m = 3: 0.03, then 0.6 * 2 -> 1, then 0.7 -> 1
    assert math.isnan(adjusted[1])
    assert [adjusted[i] for i in (0, 2, 3)] == pytest.approx([1.0, 1.0, 0.03])


def test_paired_test_uses_matching_seeds_only():
    method = {0: 0.50, 1: 0.60, 2: 0.55, 5: 0.9}
    base = {0: 0.40, 1: 0.45, 2: 0.50, 3: 0.1}
    test = paired_test(method, base)
    ref = sps.ttest_rel([0.50, 0.60, 0.55], [0.40, 0.45, 0.50])
    assert test.n == 3 and test.mean_diff == pytest.approx(0.1)
    assert (test.t_stat, test.t_p) == pytest.approx((ref.statistic, ref.pvalue))
    assert math.isnan(test.wilcoxon_p)  # fewer than 6 pairs


def test_paired_test_with_one_pair_is_undefined():
    test = paired_test({0: 0.5}, {0: 0.4})
    assert test.n == 1 and test.mean_diff == pytest.approx(0.1) and math.isnan(test.t_p)


def test_wilcoxon_with_ties_matches_scipy():
    a = [0.61, 0.62, 0.60, 0.65, 0.63, 0.64, 0.66]
    b = [0.60, 0.60, 0.60, 0.62, 0.60, 0.63, 0.62]  # one zero difference, tied |differences|
    test = paired_test(dict(enumerate(a)), dict(enumerate(b)))
    assert test.wilcoxon_p == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert test.t_p == pytest.approx(sps.ttest_rel(a, b).pvalue)


def test_trend_slope_per_doubling_matches_linregress():
    sizes = [16, 16, 32, 32, 64, 64]
    values = [0.50, 0.52, 0.55, 0.56, 0.61, 0.59]
    trend = batch_size_trend(sizes, values)
    fit = sps.linregress(np.log2(sizes), values)
    assert (trend.slope, trend.slope_se) == pytest.approx((fit.slope, fit.stderr))
    assert trend.range == pytest.approx(0.60 - 0.51)
    half = sps.t.ppf(0.975, 4) * fit.stderr
    assert (trend.slope_ci_low, trend.slope_ci_high) == pytest.approx((fit.slope - half, fit.slope + half))


def test_trend_needs_two_batch_sizes_and_three_runs_for_an_error():
    assert math.isnan(batch_size_trend([32, 32], [0.5, 0.6]).slope)
    two = batch_size_trend([16, 32], [0.5, 0.6])
    assert two.slope == pytest.approx(0.1) and math.isnan(two.slope_se)


# The method tags bench logs per run (reports learn display names, order and the baseline only from them).
METHOD_TAGS = {
    "fgssl": ("FG-SSL", "0", "true"),
    "simclr": ("SimCLR", "10", "false"),
    "byol": ("BYOL", "20", "false"),
    "barlow": ("Barlow Twins", "30", "false"),
    "random_init": ("random init", "1000", "false"),
}


def _runs(rows):
    frame = pd.DataFrame(rows, columns=["method", "seed", "knn.test.accuracy"])
    tags = frame["method"].map(METHOD_TAGS)
    return frame.assign(
        setting="synthetic",
        batch_size=32,
        status="FINISHED",
        variant="",
        reference=frame["method"] == "random_init",
        method_display=tags.str[0],
        method_order=tags.str[1],
        method_baseline=tags.str[2],
    )


def test_comparisons_holm_over_methods_and_missing_cells():
    frame = _runs(
        [
            ("fgssl", 0, 0.50),
            ("fgssl", 1, 0.52),
            ("fgssl", 2, 0.55),
            ("simclr", 0, 0.40),
            ("simclr", 1, 0.43),
            ("simclr", 2, 0.44),
            ("byol", 0, 0.51),
            ("byol", 1, 0.50),
            ("byol", 2, 0.56),
            ("barlow", 0, 0.45),  # one seed: no test, and it must not count in Holm's m
        ]
    )
    tests = comparisons(frame, ["knn.test.accuracy"]).set_index("method")
    assert list(tests.index) == ["simclr", "byol", "barlow"]
    p_simclr = sps.ttest_rel([0.40, 0.43, 0.44], [0.50, 0.52, 0.55]).pvalue
    p_byol = sps.ttest_rel([0.51, 0.50, 0.56], [0.50, 0.52, 0.55]).pvalue
    assert tests.loc["simclr", "p_t"] == pytest.approx(p_simclr)
    assert tests.loc["simclr", "p_t_holm"] == pytest.approx(min(1, 2 * min(p_simclr, p_byol)))
    assert tests.loc["byol", "p_t_holm"] == pytest.approx(max(2 * min(p_simclr, p_byol), max(p_simclr, p_byol)))
    assert math.isnan(tests.loc["barlow", "p_t_holm"])
    cells = cell_stats(frame, ["knn.test.accuracy"]).set_index("method")
    assert cells.loc["barlow", "n"] == 1 and math.isnan(cells.loc["barlow", "std"])
    assert list(cells.index) == ["fgssl", "simclr", "byol", "barlow"]


def test_weights_files_are_separate_arms_and_fgssl_from_scratch_is_the_baseline():
    sha = "ab" * 32
    frame = _runs(
        [
            ("fgssl", 0, 0.50),
            ("fgssl", 1, 0.52),
            ("fgssl", 2, 0.55),
            ("fgssl", 0, 0.70),  # fgssl from weights: an arm of its own, never the baseline
            ("fgssl", 1, 0.72),
            ("fgssl", 2, 0.71),
            ("random_init", 0, 0.40),
            ("random_init", 1, 0.41),
            ("random_init", 2, 0.45),
            ("random_init", 0, 0.60),
            ("random_init", 1, 0.66),
            ("random_init", 2, 0.62),
        ]
    )
    frame["weights"] = ["", "", "", sha, sha, sha, "", "", "", sha, sha, sha]
    cells = cell_stats(frame, ["knn.test.accuracy"])
    assert list(zip(cells["method"], cells["weights"], strict=True)) == [
        ("fgssl", ""),
        ("fgssl", sha),
        ("random_init", ""),
        ("random_init", sha),
    ]
    assert list(cells["n"]) == [3, 3, 3, 3]
    assert list(cells["mean"]) == pytest.approx([0.52333333, 0.71, 0.42, 0.62666667])

    tests = comparisons(frame, ["knn.test.accuracy"]).set_index(["method", "weights"])
    base = [0.50, 0.52, 0.55]
    assert set(tests["baseline"]) == {"FG-SSL"}
    assert tests.loc[("fgssl", sha), "p_t"] == pytest.approx(sps.ttest_rel([0.70, 0.72, 0.71], base).pvalue)
    assert tests.loc[("random_init", sha), "mean_diff"] == pytest.approx(0.62666667 - 0.52333333)
    assert tests.loc[("random_init", ""), "p_t"] == pytest.approx(sps.ttest_rel([0.40, 0.41, 0.45], base).pvalue)
    assert len(tests) == 3  # Holm's family: three arms against one baseline


def test_summary_judges_where_the_seeds_are_not_at_the_largest_batch():
    from reports.arms import Methods
    from reports.result_tables import sensitivity_table
    from reports.summary import summary_paragraph

    three_seeds = [
        (m, s, 0.5 + 0.01 * s + (0.05 if m == "simclr" else 0)) for m in ("fgssl", "simclr") for s in (0, 1, 2)
    ]
    frame = pd.concat(
        [_runs(three_seeds), _runs([("fgssl", 0, 0.4), ("simclr", 0, 0.6)]).assign(batch_size=128)],
        ignore_index=True,
    ).assign(weights="")
    metric = "knn.test.accuracy"
    text = summary_paragraph(
        cell_stats(frame, [metric]),
        comparisons(frame, [metric]),
        sensitivity_table(frame, [metric]).data,
        [metric],
        Methods.of(frame),
    )
    assert text.startswith("synthetic:\n- knn accuracy on test, batch 32 (mean [95% CI], 3 seeds each): SimCLR 0.560")
    assert "Significant differences to FG-SSL" in text or "No difference to FG-SSL" in text
