"""The report's tables, built from the tidy run DataFrame: comparison, paired tests, batch-size sensitivity,
ablation, what the embeddings encode, cost and the runs left out of the statistics."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator

import numpy as np
import pandas as pd

from reports.collect import FINETUNE_METHOD_PARAMS, FINISHED, NOT_RUN, finished, pooling_values, ran_finetune
from reports.stats import MIN_SEEDS, Summary, batch_size_trend, holm, paired_test, summarize
from reports.table import Table

BASELINE = "fgssl"
METHOD_ORDER = ("fgssl", "simclr", "byol", "barlow")
HEADLINE_METRICS = (
    "knn.test.accuracy",
    "knn.test.balanced_accuracy",
    "linear.test.accuracy",
    "linear.test.balanced_accuracy",
    "finetune.test.accuracy",
    "finetune.test.balanced_accuracy",
)
TEST_METRICS = ("accuracy", "balanced_accuracy", "f1_macro", "auc_macro", "qwk")
VARIANCE_PREFIX = "variance_share.test."
ALPHA = 0.05
DAGGER = "†"
FEW_NOTE = f"{DAGGER} fewer than {MIN_SEEDS} seeds: spread and interval are unreliable (n = seeds)."


def method_sort_key(method: str, reference: bool = False) -> tuple[int, int, str]:
    rank = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
    return (int(reference), rank, method)


def arm_sort_key(method: str, reference: bool = False, weights: str = "") -> tuple[int, int, str, str]:
    """Methods in the usual order, each from scratch before its runs from weights files."""
    return (*method_sort_key(method, reference), weights)


def sort_by_arm(frame: pd.DataFrame, leading: tuple[str, ...] = ()) -> pd.DataFrame:
    """Rows in report order: by the leading columns, then by method and weights (stable, so ties keep order)."""

    def key(i: int) -> tuple:
        row = frame.iloc[i]
        arm = arm_sort_key(row["method"], bool(row.get("reference", False)), row.get("weights", ""))
        return (*(row[c] for c in leading), arm)

    return frame.iloc[sorted(range(len(frame)), key=key)]


def short_sha(weights: str) -> str:
    return weights[:8]


def arm_name(method: str, weights: str = "") -> str:
    """A method and the weights file it started from, if any: runs from other weights are another arm."""
    return f"{method} (weights {short_sha(weights)})" if weights else method


def method_label(method: str, reference: bool, weights: str = "") -> str:
    notes = (["reference"] if reference else []) + ([f"weights {short_sha(weights)}"] if weights else [])
    return f"{method} ({', '.join(notes)})" if notes else method


def reference_kind(method: str, weights: str = "") -> str:
    """What a reference stands for: only random_init without a weights file is an untrained backbone."""
    if method == "random_init":
        return f"pretrained weights {short_sha(weights)}" if weights else "untrained"
    if method == "supervised":
        return f"supervised from pretrained weights {short_sha(weights)}" if weights else "supervised from scratch"
    return f"{method} from pretrained weights {short_sha(weights)}" if weights else method


def baseline_weights(weights: Iterable[str]) -> str | None:
    """The FG-SSL arm the others are tested against: from scratch if it ran, else the first weights file."""
    present = sorted(set(weights))
    if not present:
        return None
    return "" if "" in present else present[0]


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
    table = pd.DataFrame(
        rows,
        columns=[
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
        ],
    )
    return sort_by_arm(table, ("setting", "batch_size")).reset_index(drop=True)


def comparisons(frame: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """Each method against FG-SSL on matching seeds, per setting, batch size and metric; Holm-corrected over
    the methods compared in that cell group (one family per column of the comparison table).

    A method started from a weights file is an arm of its own (never pooled with its runs from scratch);
    the baseline is FG-SSL from scratch when it ran, so every arm is tested against the same runs.
    """
    rows = []
    runs = main_runs(frame)
    for (setting, batch), group in runs.groupby(["setting", "batch_size"], sort=True):
        base_weights = baseline_weights(group.loc[group["method"] == BASELINE, "weights"])
        if base_weights is None:
            continue
        base = group[(group["method"] == BASELINE) & (group["weights"] == base_weights)]
        others = sorted(
            {
                (m, r, w)
                for m, r, w in zip(group["method"], group["reference"], group["weights"], strict=True)
                if (m, w) != (BASELINE, base_weights)
            },
            key=lambda arm: arm_sort_key(*arm),
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
                        "baseline": arm_name(BASELINE, base_weights),
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
    for i, key in enumerate(keys.itertuples(index=False)):
        disp = {
            "dataset": key.setting,
            "batch": str(key.batch_size),
            "method": method_label(key.method, key.reference, key.weights),
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
            disp[_short(metric)] = format_cell(s, mark)
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
    if len(not_run):
        listed = ", ".join(
            f"{method_label(r.method, r.reference, r.weights)} at batch {r.batch_size} on {r.setting}"
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


def finetune_note(frame: pd.DataFrame) -> str | None:
    """How each method of the comparison was fine-tuned: bench's ``auto`` mode differs by method."""
    runs = main_runs(frame)
    runs = runs[ran_finetune(runs)]
    if "param.eval.finetune_mode" not in runs or runs.empty:
        return None
    grids = runs.get("param.eval.finetune_grids", pd.Series("", index=runs.index)).fillna("").astype(str)
    modes = runs["param.eval.finetune_mode"].fillna("?").astype(str) + grids.map(lambda g: f" (grids {g})" if g else "")
    parts = []
    for method in sorted(runs["method"].unique(), key=method_sort_key):
        parts.append(f"{method} {' / '.join(sorted(modes[runs['method'] == method].unique()))}")
    return "Fine-tune mode per method: " + "; ".join(parts) + "."


def tests_table(tests: pd.DataFrame) -> Table:
    """The paired tests behind the significance marks, with raw and Holm-adjusted p-values."""
    disp = pd.DataFrame(
        {
            "dataset": tests["setting"],
            "batch": tests["batch_size"].astype(str),
            "metric": tests["metric"].map(_short_with_protocol),
            "method": [arm_name(m, w) for m, w in zip(tests["method"], tests["weights"], strict=True)],
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
        arms = sorted(
            set(zip(by_setting["method"], by_setting["weights"], strict=True)),
            key=lambda a: arm_sort_key(a[0], False, a[1]),
        )
        for metric in metrics:
            for method, weights in arms:
                group = by_setting[(by_setting["method"] == method) & (by_setting["weights"] == weights)]
                group = group.dropna(subset=[metric])
                if group.empty:
                    continue
                disp = {"dataset": setting, "metric": _short_with_protocol(metric), "method": arm_name(method, weights)}
                data = {"setting": setting, "metric": metric, "method": method, "weights": weights}
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
    runs = with_weights(finished(frame))
    for method, by_method in runs.groupby("method"):
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


def _option_text(column: str, value: object) -> str:
    if column == "weights":
        return f"weights={short_sha(str(value)) or 'none'}"
    return f"{column.removeprefix('param.method.').removeprefix('param.eval.')}={value}"


def _arm_groups(runs: pd.DataFrame) -> Iterator[tuple[str, int, str, bool, str, pd.DataFrame]]:
    """(setting, batch size, method, reference, weights, its runs) per arm, in report order."""
    keys = sorted(
        {
            (s, int(b), m, r, w)
            for s, b, m, r, w in runs[["setting", "batch_size", "method", "reference", "weights"]].itertuples(
                index=False
            )
        },
        key=lambda k: (k[0], k[1], arm_sort_key(k[2], k[3], k[4])),
    )
    for setting, batch, method, reference, weights in keys:
        group = runs[
            (runs["setting"] == setting)
            & (runs["batch_size"] == batch)
            & (runs["method"] == method)
            & (runs["weights"] == weights)
        ]
        yield setting, batch, method, reference, weights, group


def variance_table(frame: pd.DataFrame) -> Table | None:
    """What the frozen embeddings' variance follows per method and batch size (bench/variance.py): the
    class, and on generated data each nuisance factor; None when no run logged the shares."""
    runs = main_runs(frame)
    shares = sorted(
        (c for c in runs.columns if c.startswith(VARIANCE_PREFIX)), key=lambda c: (c != f"{VARIANCE_PREFIX}class", c)
    )
    if not shares:
        return None
    display_rows, data_rows = [], []
    for setting, batch, method, reference, weights, group in _arm_groups(runs):
        disp = {"dataset": setting, "batch": str(batch), "method": method_label(method, reference, weights)}
        data = {"setting": setting, "batch_size": batch, "method": method, "weights": weights, "runs": len(group)}
        for column in shares:
            name = column.removeprefix(VARIANCE_PREFIX)
            summary = summarize(_col(group, column))
            disp[name.replace("_", " ")] = _mean_std(summary, 1.0, ".3f")
            data[f"{name}_mean"], data[f"{name}_std"] = summary.mean, summary.std
        display_rows.append(disp)
        data_rows.append(data)
    along_factors = ", and along each nuisance factor the synthetic generator drew independently of the class"
    something_else = "; a large nuisance share with a small class share means it learned something else"
    factors = len(shares) > 1
    notes = [
        "Share of the variance of the L2-normalised test embeddings (frozen backbone) that lies between the "
        f"classes{along_factors if factors else ''}; mean ± std over seeds.",
        f"A method that learned the class raises the class share above the untrained reference's"
        f"{something_else if factors else ''}.",
    ]
    title = "What the embeddings encode"
    return Table("embedding_variance", title, pd.DataFrame(display_rows), pd.DataFrame(data_rows), set(), notes)


def cost_table(frame: pd.DataFrame) -> Table:
    """Wall time and throughput per method and batch size; memory only if a run logged it."""
    runs = main_runs(frame)
    memory_cols = [c for c in runs.columns if "memory" in c.lower() and pd.api.types.is_numeric_dtype(runs[c])]
    display_rows, data_rows = [], []
    for setting, batch, method, reference, weights, group in _arm_groups(runs):
        seconds = summarize(_col(group, "run.seconds"))
        speed = summarize(_col(group, "train.images_per_second"))
        disp = {
            "dataset": setting,
            "batch": str(batch),
            "method": method_label(method, reference, weights),
            "runs": str(len(group)),
            "wall time (min)": _mean_std(seconds, 60.0),
            "train images/s": _mean_std(speed, 1.0, ".1f"),
        }
        data = {
            "setting": setting,
            "batch_size": batch,
            "method": method,
            "weights": weights,
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
    runs = with_weights(frame[frame["status"] != FINISHED])
    disp = pd.DataFrame(
        {
            "run": runs["run_name"],
            "status": runs["status"],
            "method": [arm_name(m, w) for m, w in zip(runs["method"], runs["weights"], strict=True)],
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
