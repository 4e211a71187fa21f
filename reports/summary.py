"""The report's summary: short points per dataset, balanced accuracy first, each claim backed by a rule of
``reports.claims`` (a best only outside the others' intervals, a gap to chance or the majority class only by
the whole interval, a difference to the baseline method only by its paired test, a difference in batch-size
sensitivity only by a test of the slopes). Methods are named by their display names (``reports.arms``)."""

from __future__ import annotations

import math

import pandas as pd

from reports import claims
from reports.arms import Methods, baseline_weights
from reports.baselines import NOT_LOGGED, baseline_sentence, scores_for
from reports.comparison import ALPHA
from reports.stats import MIN_SEEDS, Summary, Trend, holm, slope_difference

SMOKE_WARNING = (
    "Warning: runs used the smoke preset (tag preset=smoke), which only checks that the pipeline runs: "
    "their numbers mean nothing."
)


def summary_metrics(headline: list[str]) -> list[str]:
    """What the summary judges, balanced accuracy first (on imbalanced medical data such as ISIC, accuracy
    rewards answering the majority class), then accuracy; each in protocol order."""
    return sorted(headline, key=lambda m: (not m.endswith(".balanced_accuracy"), headline.index(m)))


def summary_paragraph(
    stats: pd.DataFrame,
    tests: pd.DataFrame,
    sensitivity: pd.DataFrame,
    metrics: list[str],
    methods: Methods,
    baselines: pd.DataFrame | None = None,
    smoke: bool = False,
) -> str:
    """Lines: a heading per dataset with its majority and chance scores, then '- ' points per metric and
    on batch size; warnings and caveats once. ``methods`` names the methods and the baseline method."""
    if stats.empty:
        return "No run finished, so there is nothing to compare; the runs that did not finish are listed below."
    baselines = baselines if baselines is not None else pd.DataFrame(columns=["setting", "metric"])
    lines = [SMOKE_WARNING] if smoke else []
    judged = stats[stats["n"] > 0]
    settings = sorted(judged.loc[~judged["reference"], "setting"].unique())
    for setting in settings:
        scores = baseline_sentence(baselines, setting)
        lines.append(f"{setting} (test split; {scores}):" if scores else f"{setting}:")
        by_setting = judged[(judged["setting"] == setting) & ~judged["reference"]]
        batch = _headline_batch(by_setting)
        for metric in metrics:
            lines.append("- " + _metric_point(judged, tests, setting, batch, metric, methods, baselines))
        if by_setting["batch_size"].nunique() < 2:  # said once in the report's notes when no setting has two
            if judged["batch_size"].nunique() > 1:
                lines.append(f"- Batch size: {setting} ran at one batch size, so its sensitivity is not assessed.")
            continue
        balanced = [m for m in metrics if m.endswith(".balanced_accuracy")] or metrics[:1]
        points = [_batch_point(sensitivity, setting, m, methods) for m in balanced]
        lines.extend("- " + p for p in points if p)
    missing = [s for s in settings if baselines.empty or s not in set(baselines["setting"])]
    if missing:
        lines.append(
            f"{NOT_LOGGED[0].upper()}{NOT_LOGGED[1:]} for {', '.join(missing)}: no run logged them and "
            "no test report gives the class counts, so no method is compared with them."
        )
    n_max = int(judged["n"].max()) if len(judged) else 0
    if n_max < MIN_SEEDS:
        lines.append(
            f"Caveat: at most {n_max} seed(s) per cell, so spreads, intervals and tests are rough; run at least "
            f"{MIN_SEEDS} seeds (better 6+, which also enables the Wilcoxon test) before drawing conclusions."
        )
    return "\n".join(lines)


def _headline_batch(rows: pd.DataFrame) -> int:
    """The batch size where the comparison is most complete: the most methods, then the most seeds
    (a study with three seeds at one batch size and one at the others is judged where it can be
    tested), then the largest. A method from a weights file counts apart from the same method from scratch.
    """
    methods = rows.drop_duplicates(["batch_size", "method", "weights"]).groupby("batch_size").size()
    seeds = rows.groupby("batch_size")["n"].sum()
    return int(max(methods.index, key=lambda b: (methods[b], seeds[b], b)))


def _metric_point(
    stats: pd.DataFrame,
    tests: pd.DataFrame,
    setting: str,
    batch: int,
    metric: str,
    methods: Methods,
    baselines: pd.DataFrame,
) -> str:
    cell = stats[(stats["setting"] == setting) & (stats["batch_size"] == batch) & (stats["metric"] == metric)]
    cell = cell.sort_values("mean", ascending=False, kind="stable")
    trained = {_arm(r, methods): _summary(r) for _, r in cell[~cell["reference"]].iterrows()}
    seeds = {s.n for s in trained.values()}
    shown = ", ".join(f"{name} {_value(s, len(seeds) > 1)}" for name, s in trained.items())
    each = f", {_seeds(seeds.pop())} each" if len(seeds) == 1 else ""
    sentences = [f"{_name(metric)}, batch {batch} (mean [95% CI]{each}): {shown}.", _leader_sentence(trained, metric)]
    everyone = {**trained, **{_arm(r, methods): _summary(r) for _, r in cell[cell["reference"]].iterrows()}}
    scores = scores_for(baselines, setting, metric)
    if scores:
        top = [s.name for s in scores if s.value == scores[0].value]
        sentences.append(_against(everyone, f"{' and '.join(top)} ({scores[0].value:.3f})", scores[0].value, metric))
    sentences.append(_significance_sentence(tests, setting, batch, metric, methods))
    for _, ref in cell[cell["reference"]].sort_values(["method", "weights"]).iterrows():
        kind, name, s = methods.kind(ref["method"], ref["weights"]), methods.name(ref["method"]), _summary(ref)
        sentences.append(f"The {kind} reference {name} ({_value(s, False)}): " + _relative_to(trained, s) + ".")
    return " ".join(s for s in sentences if s)


def _leader_sentence(cells: dict[str, Summary], metric: str) -> str:
    lead = claims.leader(cells)
    top = lead.arms[0] if lead.arms else ""
    if lead.verdict == claims.ALONE:
        return f"{top} is the only method with finished runs here."
    if lead.verdict == claims.BEST:
        return f"{top} is best on {_short(metric)}: its 95% interval lies above every other method's."
    tied = _join([f"{a} ({cells[a].mean:.3f})" for a in lead.arms])
    if lead.verdict == claims.TIED:
        return f"No best {_short(metric)}: {tied} are tied (their 95% intervals overlap the top one's)."
    return f"No best {_short(metric)}: fewer than 2 seeds leave no interval to tell {tied} apart."


def _against(cells: dict[str, Summary], label: str, value: float, metric: str) -> str:
    """Which arms are above, at or below a score by their whole interval."""
    groups: dict[str | None, list[str]] = {}
    for name, s in cells.items():
        groups.setdefault(claims.position(s, value), []).append(name)
    parts = [
        f"{words}: {_join(groups[key])}"
        for key, words in (("above", "above"), ("within", "not distinguishable"), ("below", "below"))
        if groups.get(key)
    ]
    if not parts:
        return f"Against {label} on {_short(metric)}: no interval to judge by."
    return f"Against {label} on {_short(metric)}, by the whole 95% interval, " + "; ".join(parts) + "."


def _relative_to(cells: dict[str, Summary], ref: Summary) -> str:
    if not claims.has_interval(ref):
        return "no interval to compare the methods with"
    above = [n for n, s in cells.items() if claims.wholly_above(s, ref)]
    below = [n for n, s in cells.items() if claims.wholly_above(ref, s)]
    parts = ([f"{_join(above)} above it"] if above else []) + ([f"{_join(below)} below it"] if below else [])
    return ("; ".join(parts) + " by the whole 95% interval") if parts else "every method's interval overlaps it"


def _significance_sentence(tests: pd.DataFrame, setting: str, batch: int, metric: str, methods: Methods) -> str:
    rows = tests[(tests["setting"] == setting) & (tests["batch_size"] == batch) & (tests["metric"] == metric)]
    if rows.empty:
        return ""  # why there are no paired tests is said once, in the report's notes
    p = rows["p_t_holm"].dropna()
    base = rows["baseline"].iloc[0]
    if p.empty:
        return f"No difference to {base} on {_short(metric)} can be tested: fewer than 2 matching seeds."
    significant = rows[rows["p_t_holm"] < ALPHA]
    if significant.empty:
        return (
            f"No difference to {base} on {_short(metric)} is significant (paired t-test on matching seeds, "
            f"Holm-corrected; smallest adjusted {_p(p.min())})."
        )
    listed = _join(
        [f"{methods.arm(r.method, r.weights)} {r.mean_diff:+.3f} ({_p(r.p_t_holm)})" for r in significant.itertuples()]
    )
    rest = "; the other differences are not" if len(significant) < len(p) else ""
    return f"Significant differences to {base} on {_short(metric)} (paired t-test, Holm): {listed}{rest}."


def _batch_point(sensitivity: pd.DataFrame, setting: str, metric: str, methods: Methods) -> str:
    rows = (
        sensitivity[(sensitivity["setting"] == setting) & (sensitivity["metric"] == metric)]
        if len(sensitivity)
        else sensitivity
    )
    what = f"Batch size, {_name(metric)}"
    if rows.empty or rows["batch_sizes"].max() < 2:
        return f"{what}: not assessed, the runs use one batch size."
    baseline, name = methods.baseline, methods.baseline_name
    if baseline is None:
        return ""
    is_base = (rows["method"] == baseline) & (
        rows["weights"] == baseline_weights(rows.loc[rows["method"] == baseline, "weights"])
    )
    if not is_base.any() or rows[is_base].iloc[0]["batch_sizes"] < 2:
        return f"{what}: no {name} runs at two batch sizes."
    base_row = rows[is_base].iloc[0]
    base, arm = _trend(base_row), methods.arm(baseline, base_row["weights"])
    others = methods.sort_by_arm(rows[~is_base & rows["slope"].notna()])
    text = f"{what}: {arm}'s slope per doubling of the batch is {_slope(base)}"
    if not _has_interval(base):
        return text + "; too few runs for an interval, so its sensitivity cannot be judged."
    text += (
        ", which contains 0: no batch-size effect shown (nor ruled out)"
        if base.slope_ci_low <= 0 <= base.slope_ci_high
        else ", which excludes 0: it is sensitive to batch size here"
    )
    if others.empty:
        return text + "."
    text += "; " + ", ".join(f"{methods.arm(r.method, r.weights)} {_slope(_trend(r))}" for _, r in others.iterrows())
    return text + ". " + _slope_comparison(arm, base, others, methods)


def _slope_comparison(arm: str, base: Trend, others: pd.DataFrame, methods: Methods) -> str:
    """Claims about relative sensitivity, each backed by the tests of the slopes' difference and sum
    (``claims.sensitivity_verdict``), Holm-corrected over the arms compared with the baseline method."""
    names = [methods.arm(r.method, r.weights) for r in others.itertuples()]
    trends = [_trend(r) for _, r in others.iterrows()]
    diffs = [slope_difference(base, t) for t in trends]
    totals = [slope_difference(base, t, plus=True) for t in trends]
    p_diff, p_total = holm([d.p for d in diffs]), holm([t.p for t in totals])
    verdicts = [claims.sensitivity_verdict(*v) for v in zip(diffs, totals, p_diff, p_total, strict=True)]
    said = []
    for verdict, words in (
        (claims.LESS, "is less sensitive to batch size than"),
        (claims.MORE, "is more sensitive to batch size than"),
        (claims.DIFFERS, "has a slope that differs from that of"),
    ):
        listed = [
            f"{n} (slope difference {d.diff:+.3f}, adjusted {_p(p)})"
            for n, d, p, v in zip(names, diffs, p_diff, verdicts, strict=True)
            if v == verdict
        ]
        if listed:
            said.append(f"{arm} {words} {_join(listed)}")
    if claims.DIFFERS in verdicts:
        said.append(
            "which of them is the more sensitive the data cannot tell "
            "(the sizes of the slopes do not differ significantly)"
        )
    unclear = [n for n, v in zip(names, verdicts, strict=True) if v == claims.CANNOT_TELL]
    if unclear:
        finite = [p for p, v in zip(p_diff, verdicts, strict=True) if v == claims.CANNOT_TELL and math.isfinite(p)]
        smallest = f"; smallest adjusted {_p(min(finite))}" if finite else ""
        said.append(
            f"whether {arm} is more or less sensitive than {_join(unclear)} the data cannot tell "
            f"(no significant slope difference, Holm{smallest})"
        )
    text = "; ".join(said)
    return text[0].upper() + text[1:] + "."


def _trend(row: pd.Series) -> Trend:
    return Trend(
        int(row["runs"]),
        int(row["batch_sizes"]),
        row["range"],
        row["slope"],
        row["slope_se"],
        row["slope_ci_low"],
        row["slope_ci_high"],
    )


def _has_interval(t: Trend) -> bool:
    return math.isfinite(t.slope_ci_low) and math.isfinite(t.slope_ci_high)


def _slope(t: Trend) -> str:
    if _has_interval(t):
        return f"{t.slope:+.3f} [{t.slope_ci_low:+.3f}, {t.slope_ci_high:+.3f}]"
    return f"{t.slope:+.3f}"


def _summary(row: pd.Series) -> Summary:
    return Summary(int(row["n"]), row["mean"], row["std"], row["ci_low"], row["ci_high"])


def _name(metric: str) -> str:
    protocol, split, name = metric.split(".", 2)
    return f"{protocol} {name.replace('_', ' ')} on {split}"


def _short(metric: str) -> str:
    protocol, _, name = metric.split(".", 2)
    return f"{protocol} {name.replace('_', ' ')}"


def _arm(row: pd.Series, methods: Methods) -> str:
    return methods.arm(row["method"], row["weights"])


def _value(s: Summary, seeds: bool = True) -> str:
    n = f" (n={s.n})" if seeds else ""
    if not claims.has_interval(s):
        return f"{s.mean:.3f}{n}"
    return f"{s.mean:.3f} [{s.ci_low:.3f}, {s.ci_high:.3f}]{n}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""
