"""The report's plain-words paragraph: who is best where, whether it is significant, and whether the
baseline method's batch-size claim holds here, with the caveat a small number of seeds demands.
Methods are named by their display names (``reports.arms``)."""

from __future__ import annotations

import math

import pandas as pd

from reports.arms import Methods, baseline_weights
from reports.comparison import ALPHA
from reports.stats import MIN_SEEDS


def summary_metrics(headline: list[str]) -> list[str]:
    """What the summary judges on: the first headline metric and, if it is not one already, the first
    balanced accuracy (on imbalanced medical data such as ISIC, accuracy rewards the majority class)."""
    balanced = [m for m in headline if m.endswith(".balanced_accuracy")]
    return list(dict.fromkeys(headline[:1] + balanced[:1]))


def summary_paragraph(
    stats: pd.DataFrame, tests: pd.DataFrame, sensitivity: pd.DataFrame, metrics: list[str], methods: Methods
) -> str:
    """One paragraph per metric over every dataset (lines separated by newlines), then one caveat; ``methods``
    names the methods and the baseline (``Methods.of`` the runs)."""
    if stats.empty:
        return "No run finished, so there is nothing to compare; the runs that did not finish are listed below."
    paragraphs = []
    for metric in metrics:
        sentences = []
        ssl = stats[(stats["metric"] == metric) & ~stats["reference"] & (stats["n"] > 0)]
        for setting, by_setting in ssl.groupby("setting", sort=True):
            batch = _headline_batch(by_setting)
            cell = by_setting[by_setting["batch_size"] == batch].sort_values("mean", ascending=False)
            sentences.append(_best_sentence(setting, batch, cell, metric, stats, methods))
            sentences.append(_significance_sentence(tests, setting, batch, metric, methods))
            sentences.append(_batch_claim_sentence(sensitivity, setting, metric, methods))
        paragraphs.append(" ".join(s for s in sentences if s))
    n_max = int(stats.loc[stats["n"] > 0, "n"].max())
    if n_max < MIN_SEEDS:
        paragraphs.append(
            f"Caveat: at most {n_max} seed(s) per cell, so spreads, intervals and tests are rough; run at least "
            f"{MIN_SEEDS} seeds (better 6+, which also enables the Wilcoxon test) before drawing conclusions."
        )
    return "\n".join(p for p in paragraphs if p)


def _headline_batch(rows: pd.DataFrame) -> int:
    """The batch size where the comparison is most complete: the most methods, then the most seeds
    (a study with three seeds at one batch size and one at the others is judged where it can be
    tested), then the largest.

    A method from a weights file counts apart from the same method from scratch.
    """
    methods = rows.drop_duplicates(["batch_size", "method", "weights"]).groupby("batch_size").size()
    seeds = rows.groupby("batch_size")["n"].sum()
    return int(max(methods.index, key=lambda b: (methods[b], seeds[b], b)))


def _best_sentence(
    setting: str, batch: int, cell: pd.DataFrame, metric: str, stats: pd.DataFrame, methods: Methods
) -> str:
    best = cell.iloc[0]
    text = f"On {setting} at batch size {batch}, {_arm(best, methods)} has the best {_name(metric)} ({_value(best)})"
    rest = [f"{_arm(r, methods)} {_value(r)}" for _, r in cell.iloc[1:].iterrows()]
    text += f", ahead of {', '.join(rest)}." if rest else "; it is the only method with finished runs there."
    reference = stats[
        (stats["setting"] == setting)
        & (stats["batch_size"] == batch)
        & stats["reference"]
        & (stats["metric"] == metric)
        & (stats["n"] > 0)
    ]
    for _, ref in reference.sort_values(["method", "weights"]).iterrows():
        beaten = [_arm(r, methods) for _, r in cell[cell["mean"] <= ref["mean"]].iterrows()]
        relation = f"matches or beats {', '.join(beaten)}" if beaten else "is below every trained method"
        kind = methods.kind(ref["method"], ref["weights"])
        text += f" The {kind} reference {methods.name(ref['method'])} ({_value(ref)}) {relation}."
    return text


def _significance_sentence(tests: pd.DataFrame, setting: str, batch: int, metric: str, methods: Methods) -> str:
    rows = tests[(tests["setting"] == setting) & (tests["batch_size"] == batch) & (tests["metric"] == metric)]
    if rows.empty and methods.baseline is None:
        return f"No paired test on {setting}: no run names a baseline method to test against."
    if rows.empty:
        return (
            f"No paired test: {setting} has no {methods.baseline_name} runs together with another method "
            "at this batch size."
        )
    p = rows["p_t_holm"].dropna()
    base = rows["baseline"].iloc[0]
    if p.empty:
        return f"The differences to {base} cannot be tested: fewer than 2 matching seeds, or identical differences."
    significant = rows[rows["p_t_holm"] < ALPHA]
    if significant.empty:
        return (
            f"None of the differences to {base} is significant (paired t-test on matching seeds, Holm-corrected; "
            f"smallest adjusted p = {p.min():.3f})."
        )
    listed = ", ".join(
        f"{methods.arm(r.method, r.weights)} ({r.mean_diff:+.3f}, p = {r.p_t_holm:.3f})"
        for r in significant.itertuples()
    )
    return f"Significant differences to {base} after Holm correction: {listed}."


def _batch_claim_sentence(sensitivity: pd.DataFrame, setting: str, metric: str, methods: Methods) -> str:
    rows = (
        sensitivity[(sensitivity["setting"] == setting) & (sensitivity["metric"] == metric)]
        if len(sensitivity)
        else sensitivity
    )
    if rows.empty or rows["batch_sizes"].max() < 2:
        return "Batch-size sensitivity is not assessed: the runs use a single batch size."
    baseline, name = methods.baseline, methods.baseline_name
    if baseline is None:
        return f"No batch-size claim is judged on {setting}: no run names a baseline method."
    base_weights = baseline_weights(rows.loc[rows["method"] == baseline, "weights"])
    is_base = (rows["method"] == baseline) & (rows["weights"] == base_weights)
    fg = rows[is_base]
    if fg.empty or fg.iloc[0]["batch_sizes"] < 2:
        return f"{name}'s batch-size claim is not assessed on {setting}: no {name} runs at two batch sizes."
    fg = fg.iloc[0]
    text = (
        f"Across batch sizes, {methods.arm(baseline, fg['weights'])}'s {_name(metric)} changes by "
        f"{fg['slope']:+.3f} per doubling (range of means {fg['range']:.3f}"
    )
    others = methods.sort_by_arm(rows[~is_base & rows["slope"].notna()])
    if not others.empty:
        text += "; " + ", ".join(f"{methods.arm(r.method, r.weights)} {r.slope:+.3f}" for r in others.itertuples())
    text += ")"
    if not math.isfinite(fg["slope_ci_low"]):
        return text + ", too few runs for an interval, so the claim cannot be judged here."
    interval = f"95% CI [{fg['slope_ci_low']:+.3f}, {fg['slope_ci_high']:+.3f}]"
    if fg["slope_ci_low"] <= 0 <= fg["slope_ci_high"]:
        verdict = (
            f"; its {interval} contains 0, so this data does not contradict the claim that {name} is "
            f"insensitive to batch size"
        )
    else:
        verdict = f"; its {interval} excludes 0, so on this data {name} is sensitive to batch size"
    steeper = [methods.arm(r.method, r.weights) for r in others.itertuples() if abs(r.slope) > abs(fg["slope"])]
    if not others.empty:
        verdict += (
            f", and it is less sensitive than {', '.join(steeper)}"
            if steeper
            else ", and no baseline is less sensitive"
        )
    return text + verdict + "."


def _name(metric: str) -> str:
    protocol, split, name = metric.split(".", 2)
    return f"{protocol} {name.replace('_', ' ')} on {split}"


def _arm(row: pd.Series, methods: Methods) -> str:
    return methods.arm(row["method"], row["weights"])


def _value(row: pd.Series) -> str:
    if row["n"] < 2:
        return f"{row['mean']:.3f}, n={int(row['n'])}"
    return f"{row['mean']:.3f} ± {row['std']:.3f}, n={int(row['n'])}"
