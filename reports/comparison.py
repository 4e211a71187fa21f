"""Statistics over the runs of a report: per-cell summaries over seeds and the paired tests of every arm
against the baseline method, Holm-corrected. Rendering them is ``reports.result_tables``'s job."""

from __future__ import annotations

import pandas as pd

from reports.arms import Methods, baseline_weights
from reports.collect import finished
from reports.stats import holm, paired_test, summarize

HEADLINE_METRICS = (
    "knn.test.accuracy",
    "knn.test.balanced_accuracy",
    "linear.test.accuracy",
    "linear.test.balanced_accuracy",
    "finetune.test.accuracy",
    "finetune.test.balanced_accuracy",
)
TEST_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "qwk")
ALPHA = 0.05
STATS_COLUMNS = [
    "setting",
    "batch_size",
    "method",
    "reference",
    "weights",
    "metric",
    "n",
    "mean",
    "std",
    "ci_low",
    "ci_high",
]
TESTS_COLUMNS = [
    "setting",
    "batch_size",
    "metric",
    "method",
    "weights",
    "baseline",
    "n_pairs",
    "mean_diff",
    "t",
    "p_t",
    "p_t_holm",
    "p_wilcoxon",
    "p_wilcoxon_holm",
]


def with_weights(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs as the tables group them; a frame from before weights files existed means none."""
    return runs if "weights" in runs else runs.assign(weights="")


def main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished runs of each method's main option set (ablation variants are reported apart)."""
    runs = with_weights(finished(frame))
    return runs[runs["variant"] == ""]


def cell_stats(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Long table: one row per setting, batch size, method and metric with n, mean, std and the 95% CI."""
    rows = []
    runs = main_runs(frame)
    for (setting, batch, method, reference, weights), group in runs.groupby(
        ["setting", "batch_size", "method", "reference", "weights"], sort=False
    ):
        for metric in metrics:
            values = group[metric].tolist() if metric in group else []
            s = summarize(values)
            rows.append(
                {
                    "setting": setting,
                    "batch_size": int(batch),
                    "method": method,
                    "reference": bool(reference),
                    "weights": weights,
                    "metric": metric,
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                }
            )
    table = pd.DataFrame(rows, columns=STATS_COLUMNS)
    return Methods.of(frame).sort_by_arm(table, ("setting", "batch_size")).reset_index(drop=True)


def comparisons(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Each method against the baseline (the method tagged ``method_baseline``) on matching seeds, per
    setting, batch size and metric; Holm-corrected over the methods compared in that cell group (one
    family per column of the comparison table). No baseline (runs from before the tags): no tests.

    A method started from a weights file is an arm of its own (never pooled with its runs from scratch);
    the baseline is its runs from scratch when they exist, so every arm is tested against the same runs.
    """
    methods = Methods.of(frame)
    baseline = methods.baseline
    if baseline is None:
        return pd.DataFrame([], columns=TESTS_COLUMNS)
    rows = []
    runs = main_runs(frame)
    for (setting, batch), group in runs.groupby(["setting", "batch_size"], sort=True):
        base_weights = baseline_weights(group.loc[group["method"] == baseline, "weights"])
        if base_weights is None:
            continue
        base = group[(group["method"] == baseline) & (group["weights"] == base_weights)]
        others = sorted(
            {
                (m, r, w)
                for m, r, w in zip(group["method"], group["reference"], group["weights"], strict=True)
                if (m, w) != (baseline, base_weights)
            },
            key=lambda arm: methods.arm_sort_key(*arm),
        )
        for metric in metrics:
            if metric not in group:
                continue
            family = []
            for method, _, weights in others:
                runs_m = group[(group["method"] == method) & (group["weights"] == weights)]
                if runs_m[metric].isna().all():
                    continue  # this arm did not run the protocol (e.g. no fine-tune): nothing to test
                test = paired_test(_by_seed(runs_m, metric), _by_seed(base, metric))
                family.append(
                    {
                        "setting": setting,
                        "batch_size": int(batch),
                        "metric": metric,
                        "method": method,
                        "weights": weights,
                        "baseline": methods.arm(baseline, base_weights),
                        "n_pairs": test.n,
                        "mean_diff": test.mean_diff,
                        "t": test.t_stat,
                        "p_t": test.t_p,
                        "p_wilcoxon": test.wilcoxon_p,
                    }
                )
            for key in ("p_t", "p_wilcoxon"):
                for row, adjusted in zip(family, holm([r[key] for r in family]), strict=True):
                    row[f"{key}_holm"] = adjusted
            rows.extend(family)
    return pd.DataFrame(rows, columns=TESTS_COLUMNS)


def _by_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    """Seed -> value; a seed run twice (a repeated sweep) is averaged so pairs stay one per seed."""
    values = runs.dropna(subset=[metric]).groupby("seed")[metric].mean()
    return {int(seed): float(v) for seed, v in values.items()}
