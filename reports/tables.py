"""The report's tables, built from the tidy run DataFrame: comparison, paired tests, batch-size sensitivity,
ablation, cost and the runs left out of the statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.collect import FINISHED, finished
from reports.stats import MIN_SEEDS, Summary, batch_size_trend, holm, paired_test, summarize
from reports.table import Table

BASELINE = "fgssl"
METHOD_ORDER = ("fgssl", "simclr", "byol", "barlow")
HEADLINE_METRICS = (
    "knn.test.accuracy",
    "knn.test.balanced_accuracy",
    "linear.test.accuracy",
    "linear.test.balanced_accuracy",
)
TEST_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "qwk")
ALPHA = 0.05
DAGGER = "†"
FEW_NOTE = f"{DAGGER} fewer than {MIN_SEEDS} seeds: spread and interval are unreliable (n = seeds)."


def method_sort_key(method: str, reference: bool = False) -> tuple[int, int, str]:
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (int(reference), rank, method)


def method_label(method: str, reference: bool) -> str:
    return f"{method} (reference)" if reference else method


def main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """Finished runs of each method's main option set (ablation variants are reported apart)."""
    runs = finished(frame)
    return runs[runs["variant"] == ""]


def cell_stats(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Long table: one row per setting, batch size, method and metric with n, mean, std and the 95% CI."""
    rows = []
    runs = main_runs(frame)
    for (setting, batch, method, reference), group in runs.groupby(
        ["setting", "batch_size", "method", "reference"], sort=False
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
                    "metric": metric,
                    "n": s.n,
                    "mean": s.mean,
                    "std": s.std,
                    "ci_low": s.ci_low,
                    "ci_high": s.ci_high,
                }
            )
    table = pd.DataFrame(
        rows,
        columns=["setting", "batch_size", "method", "reference", "metric", "n", "mean", "std", "ci_low", "ci_high"],
    )
    order = table.apply(lambda r: (r["setting"], r["batch_size"], method_sort_key(r["method"], r["reference"])), axis=1)
    return table.iloc[sorted(range(len(table)), key=lambda i: order.iloc[i])].reset_index(drop=True)


def comparisons(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Each method against FG-SSL on matching seeds, per setting, batch size and metric; Holm-corrected over
    the methods compared in that cell group (one family per column of the comparison table)."""
    rows = []
    runs = main_runs(frame)
    for (setting, batch), group in runs.groupby(["setting", "batch_size"], sort=True):
        base = group[group["method"] == BASELINE]
        if base.empty:
            continue
        others = sorted(
            {(m, r) for m, r in zip(group["method"], group["reference"], strict=True) if m != BASELINE},
            key=lambda mr: method_sort_key(*mr),
        )
        for metric in metrics:
            if metric not in group:
                continue
            family = []
            for method, _ in others:
                runs_m = group[group["method"] == method]
                test = paired_test(_by_seed(runs_m, metric), _by_seed(base, metric))
                family.append(
                    {
                        "setting": setting,
                        "batch_size": int(batch),
                        "metric": metric,
                        "method": method,
                        "baseline": BASELINE,
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
    columns = [
        "setting",
        "batch_size",
        "metric",
        "method",
        "baseline",
        "n_pairs",
        "mean_diff",
        "t",
        "p_t",
        "p_t_holm",
        "p_wilcoxon",
        "p_wilcoxon_holm",
    ]
    return pd.DataFrame(rows, columns=columns)


def _by_seed(runs: pd.DataFrame, metric: str) -> dict[int, float]:
    """Seed -> value; a seed run twice (a repeated sweep) is averaged so pairs stay one per seed."""
    values = runs.dropna(subset=[metric]).groupby("seed")[metric].mean()
    return {int(seed): float(v) for seed, v in values.items()}


def significance_mark(p: float) -> str:
    if not math.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < ALPHA else ""


def format_cell(s: Summary, mark: str = "", lines: int = 2) -> str:
    """'mean ± std' then '[CI] n=..'; one seed shows the value alone, and small n gets a dagger."""
    if s.n == 0:
        return "–"
    few = DAGGER if s.few else ""
    if s.n == 1:
        return f"{s.mean:.3f}{mark}\nn=1{few}" if lines == 2 else f"{s.mean:.3f}{mark} (n=1){few}"
    if lines == 2:
        return f"{s.mean:.3f} ± {s.std:.3f}{mark}\n[{s.ci_low:.3f}, {s.ci_high:.3f}] n={s.n}{few}"
    return f"{s.mean:.3f} ± {s.std:.3f}{mark} (n={s.n}){few}"


def _summary_of(row: pd.Series) -> Summary:
    return Summary(int(row["n"]), row["mean"], row["std"], row["ci_low"], row["ci_high"])


def comparison_table(stats: pd.DataFrame, tests: pd.DataFrame, protocol: str, metrics: list[str]) -> Table:
    """Methods (and the reference) x settings and batch sizes for one protocol's test metrics; best in bold."""
    cols = [m for m in metrics if m.startswith(f"{protocol}.test.")]
    sub = stats[stats["metric"].isin(cols)]
    keys = sub[["setting", "batch_size", "method", "reference"]].drop_duplicates()
    marks = {(r.setting, r.batch_size, r.metric, r.method): significance_mark(r.p_t_holm) for r in tests.itertuples()}
    display_rows, data_rows, bold = [], [], set()
    for i, key in enumerate(keys.itertuples(index=False)):
        disp = {"dataset": key.setting, "batch": str(key.batch_size), "method": method_label(key.method, key.reference)}
        for metric in cols:
            match = sub[
                (sub["setting"] == key.setting)
                & (sub["batch_size"] == key.batch_size)
                & (sub["method"] == key.method)
                & (sub["metric"] == metric)
            ]
            s = _summary_of(match.iloc[0])
            disp[_short(metric)] = format_cell(s, marks.get((key.setting, key.batch_size, metric, key.method), ""))
            data_rows.append(match.iloc[0].to_dict())
            block = sub[
                (sub["setting"] == key.setting) & (sub["batch_size"] == key.batch_size) & (sub["metric"] == metric)
            ]
            if s.n and np.isclose(s.mean, block["mean"].max()):
                bold.add((i, _short(metric)))
        display_rows.append(disp)
    notes = [
        "Mean ± standard deviation over seeds, 95% t-interval in brackets; "
        "best mean per dataset and batch size in bold.",
        "* p < 0.05, ** p < 0.01 against fgssl: paired t-test on matching seeds, Holm-corrected over the methods "
        "compared in that column.",
        FEW_NOTE,
    ]
    return Table(
        f"comparison_{protocol}",
        f"Comparison on test ({protocol} protocol)",
        pd.DataFrame(display_rows),
        pd.DataFrame(data_rows),
        bold,
        notes,
    )


def tests_table(tests: pd.DataFrame) -> Table:
    """The paired tests behind the significance marks, with raw and Holm-adjusted p-values."""
    disp = pd.DataFrame(
        {
            "dataset": tests["setting"],
            "batch": tests["batch_size"].astype(str),
            "metric": tests["metric"].map(_short_with_protocol),
            "method": tests["method"],
            "pairs": tests["n_pairs"].astype(str),
            "diff vs fgssl": tests["mean_diff"].map(lambda v: _num(v, "+.3f")),
            "t": tests["t"].map(lambda v: _num(v, ".2f")),
            "p (t)": tests["p_t"].map(_p),
            "p Holm (t)": tests["p_t_holm"].map(_p),
            "p (Wilcoxon)": tests["p_wilcoxon"].map(_p),
            "p Holm (W.)": tests["p_wilcoxon_holm"].map(_p),
        }
    )
    bold = {(i, "p Holm (t)") for i, p in enumerate(tests["p_t_holm"]) if math.isfinite(p) and p < ALPHA}
    notes = [
        "diff = method minus fgssl, mean over matching seeds. Holm correction over the methods within one dataset, "
        "batch size and metric.",
        f"Wilcoxon signed-rank only with at least 6 pairs ('–' otherwise); t-test needs 2 pairs that differ. "
        f"Significant Holm-adjusted t-test p < {ALPHA} in bold.",
    ]
    return Table(
        "paired_tests",
        "Paired tests against FG-SSL",
        disp.reset_index(drop=True),
        tests.reset_index(drop=True),
        bold,
        notes,
    )


def sensitivity_table(frame: pd.DataFrame, metrics: list[str]) -> Table:
    """Metric per method per batch size, then the range of the means and the slope per doubling of the batch."""
    runs = main_runs(frame)
    runs = runs[~runs["reference"]]
    sizes = sorted(int(b) for b in runs["batch_size"].dropna().unique())
    display_rows, data_rows = [], []
    for setting, by_setting in runs.groupby("setting"):
        methods = sorted(by_setting["method"].unique(), key=method_sort_key)
        for metric in metrics:
            for method in methods:
                group = by_setting[(by_setting["method"] == method)].dropna(subset=[metric])
                if group.empty:
                    continue
                disp = {"dataset": setting, "metric": _short_with_protocol(metric), "method": method}
                data = {"setting": setting, "metric": metric, "method": method}
                for size in sizes:
                    s = summarize(group.loc[group["batch_size"] == size, metric].tolist())
                    disp[f"b={size}"] = format_cell(s, lines=1)
                    data.update({f"b{size}_n": s.n, f"b{size}_mean": s.mean, f"b{size}_std": s.std})
                trend = batch_size_trend(group["batch_size"].astype(int).tolist(), group[metric].tolist())
                disp["range"] = _num(trend.range, ".3f")
                disp["slope / doubling ± SE"] = (
                    f"{_num(trend.slope, '+.3f')} ± {_num(trend.slope_se, '.3f')}"
                    if math.isfinite(trend.slope)
                    else "–"
                )
                disp["95% CI of slope"] = (
                    f"[{trend.slope_ci_low:+.3f}, {trend.slope_ci_high:+.3f}]"
                    if math.isfinite(trend.slope_ci_low)
                    else "–"
                )
                data.update(
                    {
                        "runs": trend.n_runs,
                        "batch_sizes": trend.n_sizes,
                        "range": trend.range,
                        "slope": trend.slope,
                        "slope_se": trend.slope_se,
                        "slope_ci_low": trend.slope_ci_low,
                        "slope_ci_high": trend.slope_ci_high,
                    }
                )
                display_rows.append(disp)
                data_rows.append(data)
    notes = [
        "Mean ± std over seeds per batch size; range = largest minus smallest of those means.",
        "Slope: least-squares fit of the metric against log2(batch size) over individual runs, i.e. the change "
        "per doubling of the batch size, with its standard error and 95% t-interval (needs 3+ runs).",
        "A slope interval that contains 0 is consistent with no batch-size effect at this number of seeds; "
        "it is not proof of none.",
    ]
    return Table(
        "batch_size_sensitivity",
        "Batch-size sensitivity",
        pd.DataFrame(display_rows),
        pd.DataFrame(data_rows),
        set(),
        notes,
    )


def ablation_tables(frame: pd.DataFrame, metrics: list[str]) -> list[Table]:
    """One table per method whose runs differ in ``method.*`` options (e.g. FG-SSL levels, schedule, grids)."""
    tables = []
    runs = finished(frame)
    for method, by_method in runs.groupby("method"):
        if by_method["variant"].nunique() < 2:
            continue
        option_cols = [
            c for c in by_method.columns if c.startswith("param.method.") and by_method[c].fillna("").nunique() > 1
        ]
        display_rows, data_rows = [], []
        groups = by_method.groupby(["setting", "batch_size", *option_cols], dropna=False, sort=True)
        for key, group in groups:
            setting, batch, *values = key
            label = ", ".join(
                f"{c.removeprefix('param.method.')}={v}" for c, v in zip(option_cols, values, strict=True)
            )
            main = (group["variant"] == "").all()
            disp = {"dataset": setting, "batch": str(batch), "options": label + (" (main)" if main else "")}
            data = {"setting": setting, "batch_size": batch, "options": label, "main": main}
            for metric in metrics:
                s = summarize(group[metric].tolist() if metric in group else [])
                disp[_short_with_protocol(metric)] = format_cell(s, lines=1)
                data.update(
                    {
                        f"{metric}.n": s.n,
                        f"{metric}.mean": s.mean,
                        f"{metric}.std": s.std,
                        f"{metric}.ci_low": s.ci_low,
                        f"{metric}.ci_high": s.ci_high,
                    }
                )
            display_rows.append(disp)
            data_rows.append(data)
        notes = [
            f"{method} runs that differ in method options; '(main)' marks the option set used in the "
            "comparison tables. Mean ± std over seeds.",
            FEW_NOTE,
        ]
        tables.append(
            Table(
                f"ablation_{method}",
                f"Ablation: {method} options",
                pd.DataFrame(display_rows),
                pd.DataFrame(data_rows),
                set(),
                notes,
            )
        )
    return tables


def cost_table(frame: pd.DataFrame) -> Table:
    """Wall time and throughput per method and batch size; memory only if a run logged it."""
    runs = main_runs(frame)
    memory_cols = [c for c in runs.columns if "memory" in c.lower() and pd.api.types.is_numeric_dtype(runs[c])]
    display_rows, data_rows = [], []
    keys = sorted(
        {
            (s, int(b), m, r)
            for s, b, m, r in runs[["setting", "batch_size", "method", "reference"]].itertuples(index=False)
        },
        key=lambda k: (k[0], k[1], method_sort_key(k[2], k[3])),
    )
    for setting, batch, method, reference in keys:
        group = runs[(runs["setting"] == setting) & (runs["batch_size"] == batch) & (runs["method"] == method)]
        seconds = summarize(_col(group, "run.seconds"))
        speed = summarize(_col(group, "train.images_per_second"))
        disp = {
            "dataset": setting,
            "batch": str(batch),
            "method": method_label(method, reference),
            "runs": str(len(group)),
            "wall time (min)": _mean_std(seconds, 60.0),
            "train images/s": _mean_std(speed, 1.0, ".1f"),
        }
        data = {
            "setting": setting,
            "batch_size": batch,
            "method": method,
            "runs": len(group),
            "run_seconds_mean": seconds.mean,
            "run_seconds_std": seconds.std,
            "images_per_second_mean": speed.mean,
            "images_per_second_std": speed.std,
        }
        if memory_cols:
            memory = summarize(_col(group, memory_cols[0]))
            disp[f"peak memory ({memory_cols[0]})"] = _mean_std(memory, 1.0, ".0f")
            data["memory_mean"] = memory.mean
        else:
            disp["peak memory"] = "not logged"
        display_rows.append(disp)
        data_rows.append(data)
    notes = [
        "Wall time: whole run (pretraining and evaluation, run.seconds). Images/s: pretraining throughput "
        "(last epoch's train.images_per_second), mean ± std over seeds.",
        "Times depend on the machine and on other load; compare within one report only.",
    ]
    return Table("cost", "Cost per run", pd.DataFrame(display_rows), pd.DataFrame(data_rows), set(), notes)


def excluded_runs_table(frame: pd.DataFrame) -> Table:
    """Every run that is not FINISHED, with why: these are never silently dropped."""
    runs = frame[frame["status"] != FINISHED]
    disp = pd.DataFrame(
        {
            "run": runs["run_name"],
            "status": runs["status"],
            "method": runs["method"],
            "dataset": runs["setting"],
            "batch": runs["batch_size"].astype(str),
            "seed": runs["seed"].astype(str),
            "reason": runs["failure_reason"].fillna("").map(lambda r: _wrap(r or "(none logged)", 60)),
        }
    ).reset_index(drop=True)
    data = runs[["run_id", "run_name", "status", "method", "setting", "batch_size", "seed", "failure_reason"]]
    notes = [
        "Runs that did not finish are left out of every statistic above. RUNNING may mean still in "
        "progress or a process that died without marking the run."
    ]
    return Table("excluded_runs", "Runs not in the statistics", disp, data.reset_index(drop=True), set(), notes)


def _col(group: pd.DataFrame, column: str) -> list[float]:
    return group[column].tolist() if column in group else []


def _mean_std(s: Summary, scale: float, fmt: str = ".2f") -> str:
    if s.n == 0:
        return "–"
    if s.n == 1:
        return f"{s.mean / scale:{fmt}}"
    return f"{s.mean / scale:{fmt}} ± {s.std / scale:{fmt}}"


def _short(metric: str) -> str:
    return metric.split(".")[-1].replace("balanced_accuracy", "balanced acc.").replace("_macro", " (macro)")


def _short_with_protocol(metric: str) -> str:
    return f"{metric.split('.')[0]} {_short(metric)}"


def _num(value: float, fmt: str) -> str:
    return f"{value:{fmt}}" if math.isfinite(value) else "–"


def _p(value: float) -> str:
    if not math.isfinite(value):
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _wrap(text: str, width: int) -> str:
    words, lines, line = text.split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "\n".join([*lines, line])
