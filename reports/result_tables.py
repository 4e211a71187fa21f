"""The report's result tables: comparison per protocol, the paired tests behind its marks, batch-size
sensitivity and the ablations; methods shown by their display names, in report order."""

from __future__ import annotations

import math

import pandas as pd

from reports.arms import Methods, short_sha
from reports.claims import BEST, leader
from reports.collect import FINETUNE_METHOD_PARAMS, NOT_RUN, finished, pooling_values, ran_finetune
from reports.comparison import ALPHA, main_runs, with_weights
from reports.stats import Summary, batch_size_trend, summarize
from reports.tableformat import (
    FEW_NOTE,
    Table,
    format_cell,
    num,
    p_value,
    short_metric,
    short_with_protocol,
)


def significance_mark(p: float) -> str:
    if not math.isfinite(p):
        return ""
    return "**" if p < 0.01 else "*" if p < ALPHA else ""


def _summary_of(row: pd.Series) -> Summary:
    return Summary(int(row["n"]), row["mean"], row["std"], row["ci_low"], row["ci_high"])


def comparison_table(
    stats: pd.DataFrame,
    tests: pd.DataFrame,
    protocol: str,
    metrics: list[str],
    methods: Methods,
    baselines: pd.DataFrame | None = None,
) -> Table:
    """Methods (and the references) x settings and batch sizes for one protocol's test metrics, then each
    setting's majority-class and chance rows (``baselines``, see reports.baselines); a best in bold only
    where the tie rule (reports.claims) names one."""
    cols = [m for m in metrics if m.startswith(f"{protocol}.test.")]
    sub = stats[stats["metric"].isin(cols)]
    arm = ["setting", "batch_size", "method", "reference", "weights"]
    ran = sub.groupby(arm, sort=False)["n"].transform("max") > 0
    not_run = sub[~ran].drop_duplicates(arm)
    sub = sub[ran]  # an arm that never ran this protocol (e.g. no fine-tune) has no row in its table
    keys = sub[arm].drop_duplicates()
    marks = {
        (r.setting, r.batch_size, r.metric, r.method, r.weights): significance_mark(r.p_t_holm)
        for r in tests.itertuples()
    }
    display_rows, data_rows, bold = [], [], set()
    settings = list(keys["setting"])
    for i, key in enumerate(keys.itertuples(index=False)):
        disp = {
            "dataset": key.setting,
            "batch": str(key.batch_size),
            "method": methods.label(key.method, key.reference, key.weights),
        }
        for metric in cols:
            match = sub[
                (sub["setting"] == key.setting)
                & (sub["batch_size"] == key.batch_size)
                & (sub["method"] == key.method)
                & (sub["weights"] == key.weights)
                & (sub["metric"] == metric)
            ]
            s = _summary_of(match.iloc[0])
            mark = marks.get((key.setting, key.batch_size, metric, key.method, key.weights), "")
            disp[short_metric(metric)] = format_cell(s, mark)
            data_rows.append(match.iloc[0].to_dict())
            block = sub[
                (sub["setting"] == key.setting) & (sub["batch_size"] == key.batch_size) & (sub["metric"] == metric)
            ]
            lead = leader({(r["method"], r["weights"]): _summary_of(r) for _, r in block.iterrows()})
            if lead.verdict == BEST and lead.arms[0] == (key.method, key.weights):
                bold.add((len(display_rows), short_metric(metric)))
        display_rows.append(disp)
        if baselines is not None and (i + 1 == len(settings) or settings[i + 1] != key.setting):
            rows, data = baseline_rows(baselines, key.setting, cols)
            display_rows += rows
            data_rows += data
    if methods.baseline is not None:
        marks_note = (
            f"* p < 0.05, ** p < 0.01 against {methods.baseline_name}: paired t-test on matching seeds, "
            "Holm-corrected over the methods compared in that column."
        )
    else:
        marks_note = "No significance marks: no run names a baseline method (tag method_baseline)."
    notes = [
        "Mean ± standard deviation over seeds, 95% t-interval in brackets. Marked best (bold): the highest mean of "
        "a dataset and batch size, only where its interval lies above every other arm's (none: tied or too few seeds).",
        marks_note,
        FEW_NOTE,
    ]
    if baselines is not None and not baselines.empty:
        notes.append(
            "majority class: always answering the test split's most frequent class; chance: uniform guessing "
            "(expected score). Shown for accuracy and balanced accuracy."
        )
    if len(not_run):
        listed = ", ".join(
            f"{methods.label(r.method, r.reference, r.weights)} at batch {r.batch_size} on {r.setting}"
            for r in not_run.itertuples()
        )
        notes.append(f"No finished run evaluated with {protocol}: {listed}.")
    return Table(
        f"comparison_{protocol}",
        f"Comparison on test ({protocol} protocol)",
        pd.DataFrame(display_rows),
        pd.DataFrame(data_rows),
        bold,
        notes,
    )


def baseline_rows(baselines: pd.DataFrame, setting: str, metrics: list[str]) -> tuple[list[dict], list[dict]]:
    """Display and data rows of a setting's majority-class and chance scores for a table's metric columns."""
    display_rows, data_rows = [], []
    for name, group in baselines[baselines["setting"] == setting].groupby("baseline", sort=False):
        by_score = group.set_index("metric")
        disp = {"dataset": setting, "batch": "–", "method": name}
        for metric in metrics:
            score = metric.split(".")[-1]
            known = score in by_score.index
            disp[short_metric(metric)] = f"{by_score.at[score, 'value']:.3f}" if known else "–"
            if known:
                value, source = by_score.at[score, "value"], by_score.at[score, "source"]
                data_rows.append(
                    {"setting": setting, "method": name, "metric": metric, "mean": value, "source": source}
                )
        display_rows.append(disp)
    return display_rows, data_rows


def finetune_note(frame: pd.DataFrame) -> str | None:
    """How each method of the comparison was fine-tuned: bench's ``auto`` mode differs by method."""
    methods = Methods.of(frame)
    runs = main_runs(frame)
    runs = runs[ran_finetune(runs)]
    if "param.eval.finetune_mode" not in runs or runs.empty:
        return None
    grids = runs.get("param.eval.finetune_grids", pd.Series("", index=runs.index)).fillna("").astype(str)
    modes = runs["param.eval.finetune_mode"].fillna("?").astype(str) + grids.map(lambda g: f" (grids {g})" if g else "")
    parts = []
    for method in methods.in_order(runs["method"]):
        parts.append(f"{methods.name(method)} {' / '.join(sorted(modes[runs['method'] == method].unique()))}")
    return "Fine-tune mode per method: " + "; ".join(parts) + "."


def tests_table(tests: pd.DataFrame, methods: Methods) -> Table:
    """The paired tests behind the significance marks, with raw and Holm-adjusted p-values; only the rows
    where a test could be computed are shown (a row of dashes says nothing), the others are counted in a note."""
    baseline = methods.baseline_name
    untestable = tests[tests["p_t"].isna()]
    testable = tests[tests["p_t"].notna()]
    disp = pd.DataFrame(
        {
            "dataset": testable["setting"],
            "batch": testable["batch_size"].astype(str),
            "metric": testable["metric"].map(short_with_protocol),
            "method": [methods.arm(m, w) for m, w in zip(testable["method"], testable["weights"], strict=True)],
            "pairs": testable["n_pairs"].astype(str),
            f"diff vs {baseline}": testable["mean_diff"].map(lambda v: num(v, "+.3f")),
            "t": testable["t"].map(lambda v: num(v, ".2f")),
            "p (t)": testable["p_t"].map(p_value),
            "p Holm (t)": testable["p_t_holm"].map(p_value),
            "p (Wilcoxon)": testable["p_wilcoxon"].map(p_value),
            "p Holm (W.)": testable["p_wilcoxon_holm"].map(p_value),
        }
    )
    bold = {(i, "p Holm (t)") for i, p in enumerate(testable["p_t_holm"]) if math.isfinite(p) and p < ALPHA}
    notes = [
        f"diff = method minus {baseline}, mean over matching seeds. Holm correction over the methods within one "
        "dataset, batch size and metric.",
        f"Wilcoxon signed-rank only with at least 6 pairs ('–' otherwise); t-test needs 2 pairs that differ. "
        f"Significant Holm-adjusted t-test p < {ALPHA} in bold.",
    ]
    if len(untestable):
        sizes = ", ".join(str(b) for b in sorted(untestable["batch_size"].unique()))
        notes.append(
            f"Left out here (kept in paired_tests.csv): {len(untestable)} comparison(s) (batch size {sizes}) with "
            "fewer than 2 matching seeds or identical differences, where no test can be computed."
        )
    return Table(
        "paired_tests",
        f"Paired tests against {baseline}",
        disp.reset_index(drop=True),
        tests.reset_index(drop=True),  # the CSV keeps every comparison's numbers
        bold,
        notes,
    )


def sensitivity_table(frame: pd.DataFrame, metrics: list[str]) -> Table:
    """Metric per method per batch size, then the range of the means and the slope per doubling of the batch."""
    methods = Methods.of(frame)
    runs = main_runs(frame)
    runs = runs[~runs["reference"]]
    sizes = sorted(int(b) for b in runs["batch_size"].dropna().unique())
    display_rows, data_rows = [], []
    for setting, by_setting in runs.groupby("setting"):
        arms = sorted(
            set(zip(by_setting["method"], by_setting["weights"], strict=True)),
            key=lambda a: methods.arm_sort_key(a[0], False, a[1]),
        )
        for metric in metrics:
            for method, weights in arms:
                group = by_setting[(by_setting["method"] == method) & (by_setting["weights"] == weights)]
                group = group.dropna(subset=[metric])
                if group.empty:
                    continue
                disp = {
                    "dataset": setting,
                    "metric": short_with_protocol(metric),
                    "method": methods.arm(method, weights),
                }
                data = {"setting": setting, "metric": metric, "method": method, "weights": weights}
                for size in sizes:
                    s = summarize(group.loc[group["batch_size"] == size, metric].tolist())
                    disp[f"b={size}"] = format_cell(s, lines=1)
                    data.update({f"b{size}_n": s.n, f"b{size}_mean": s.mean, f"b{size}_std": s.std})
                trend = batch_size_trend(group["batch_size"].astype(int).tolist(), group[metric].tolist())
                disp["range"] = num(trend.range, ".3f")
                disp["slope / doubling ± SE"] = (
                    f"{num(trend.slope, '+.3f')} ± {num(trend.slope_se, '.3f')}" if math.isfinite(trend.slope) else "–"
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
    """One table per method whose runs differ in ``method.*`` options (e.g. FG-SSL levels, schedule, grids),
    in report order; files are named by the method's registry name, titles by its display name."""
    methods = Methods.of(frame)
    tables = []
    runs = with_weights(finished(frame))
    for method in methods.in_order(runs["method"]):
        by_method = runs[runs["method"] == method]
        if by_method["variant"].nunique() < 2:
            continue
        option_cols = [
            c for c in by_method.columns if c.startswith("param.method.") and by_method[c].fillna("").nunique() > 1
        ]
        finetune_cols = [f"param.{k}" for k in FINETUNE_METHOD_PARAMS if f"param.{k}" in by_method]
        pooled = pooling_values(by_method, finetune_cols)  # NOT_RUN where the run did not fine-tune
        finetune_cols = [c for c in finetune_cols if pooled.loc[pooled[c] != NOT_RUN, c].nunique() > 1]
        by_method = by_method.assign(**{c: pooled[c] for c in finetune_cols})
        option_cols += finetune_cols
        if by_method["weights"].nunique() > 1:  # runs from other weights are never pooled
            option_cols = ["weights", *option_cols]
        display_rows, data_rows = [], []
        groups = by_method.groupby(["setting", "batch_size", *option_cols], dropna=False, sort=True)
        for key, group in groups:
            setting, batch, *values = key
            label = ", ".join(_option_text(c, v) for c, v in zip(option_cols, values, strict=True))
            main = (group["variant"] == "").all()
            disp = {"dataset": setting, "batch": str(batch), "options": label + (" (main)" if main else "")}
            data = {"setting": setting, "batch_size": batch, "options": label, "main": main}
            for metric in metrics:
                s = summarize(group[metric].tolist() if metric in group else [])
                disp[short_with_protocol(metric)] = format_cell(s, lines=1)
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
            f"{methods.name(method)} runs that differ in method options; '(main)' marks the option set used in the "
            "comparison tables. Mean ± std over seeds.",
            FEW_NOTE,
        ]
        tables.append(
            Table(
                f"ablation_{method}",
                f"Ablation: {methods.name(method)} options",
                pd.DataFrame(display_rows),
                pd.DataFrame(data_rows),
                set(),
                notes,
            )
        )
    return tables


def _option_text(column: str, value: object) -> str:
    if column == "weights":
        return f"weights={short_sha(str(value)) or 'none'}"
    return f"{column.removeprefix('param.method.').removeprefix('param.eval.')}={value}"
