"""Figures for the report (matplotlib, Agg): each function returns one page-sized Figure."""

from __future__ import annotations

import math
from collections.abc import Iterable

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from reports.arms import SUPERVISED, UNTRAINED, Methods  # noqa: E402
from reports.baselines import BaselineScore  # noqa: E402
from reports.comparison import with_weights  # noqa: E402
from reports.tableformat import wrap  # noqa: E402

PAGE = (11.69, 8.27)  # A4 landscape, inches
# Methods take colours in report order from tab10 without its grey, which the references wear.
PALETTE = (
    "tab:blue",
    "tab:orange",
    "tab:green",
    "tab:red",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)
REFERENCE_COLORS = {UNTRAINED: "grey", SUPERVISED: "black"}
LOSS_TITLE = "Training loss per epoch"
LOSS_LABEL = "train.loss (sum of the method's step losses)"
BASELINE_STYLES = (
    {"color": "0.2", "linestyle": "-.", "linewidth": 1.2, "zorder": 1},
    {"color": "0.45", "linestyle": ":", "linewidth": 1.2, "zorder": 1},
)


def metric_label(metric: str) -> str:
    protocol, split, name = metric.split(".", 2)
    name = name.replace("_", " ").replace("auc macro", "macro AUC").replace("f1 macro", "macro F1")
    return f"{protocol} {name} ({split})"


def method_colors(methods: Methods, present: Iterable[str]) -> dict[str, str]:
    """Method -> colour by its position in report order among the (non-reference) methods present; the
    palette repeats after nine methods."""
    ssl = [m for m in methods.in_order(present) if m not in methods.references]
    return {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(ssl)}


def batch_size_figure(
    stats: pd.DataFrame,
    setting: str,
    metrics: list[str],
    methods: Methods,
    baselines: dict[str, list[BaselineScore]] | None = None,
) -> Figure:
    """Mean metric against batch size per method, shaded 95% CI; references dashed, runs from weights dotted;
    ``baselines`` (metric -> majority-class and chance scores) as labelled horizontal lines.
    Colours follow the methods of the whole ``stats`` frame, so a method keeps its colour on every page."""
    fig, axes = _grid(
        len(metrics), f"Metric vs batch size — {setting} (mean over seeds; shaded: 95% CI, cut at the metric's bounds)"
    )
    colors = method_colors(methods, stats.loc[~stats["reference"].astype(bool), "method"])
    sub = stats[stats["setting"] == setting]
    sizes = sorted(sub["batch_size"].unique())
    for ax, metric in zip(axes, metrics, strict=False):
        rows = sub[sub["metric"] == metric]
        for (method, reference, weights), g in sorted(
            rows.groupby(["method", "reference", "weights"]), key=lambda kv: methods.arm_sort_key(*kv[0])
        ):
            g = g.sort_values("batch_size")
            style = _style(method, reference, weights, colors)
            ax.plot(g["batch_size"], g["mean"], marker="o", label=methods.label(method, reference, weights), **style)
            low, high = _bounds(metric)
            ax.fill_between(
                g["batch_size"],
                g["ci_low"].clip(low, high),
                g["ci_high"].clip(low, high),
                alpha=0.15,
                color=style["color"],
            )
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size (images, log2 scale)")
        ax.set_ylabel(metric_label(metric))
        ax.grid(alpha=0.3)
    _legend(fig, axes)  # the methods, before the panels' baseline lines join their handles
    for ax, metric in zip(axes, metrics, strict=False):
        baseline_lines(ax, (baselines or {}).get(metric, []))
    return fig


def baseline_lines(ax, scores: list[BaselineScore], vertical: bool = False) -> None:
    """Majority-class and chance scores as reference lines, named in the panel's own legend (placed where
    it covers the least). The highest score (the one to beat) is always drawn; a lower one outside the
    data's range is named as off the axis instead of squashing the data. Equal scores share a line."""
    merged: dict[float, list[str]] = {}
    for score in scores:
        merged.setdefault(round(score.value, 9), []).append(score.name)
    low, high = ax.get_xlim() if vertical else ax.get_ylim()
    handles = []
    for i, (value, names) in enumerate(sorted(merged.items(), reverse=True)):
        label = f"{' = '.join(names)} {value:.3f}"
        if i == 0 or low <= value <= high:
            handles.append((ax.axvline if vertical else ax.axhline)(value, label=label, **BASELINE_STYLES[i % 2]))
        else:
            handles += ax.plot([], [], linestyle="none", label=f"{label} (off the axis)")
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=7)


def _style(method: str, reference: bool, weights: str, colors: dict[str, str]) -> dict[str, str | None]:
    """One colour per method (references grey or black, dashed); a run from a weights file is dotted so it
    is never mistaken for the same method from scratch."""
    if reference:
        style = {"color": REFERENCE_COLORS.get(method, "grey"), "linestyle": "--"}
    else:
        style = {"color": colors.get(method)}
    if weights:
        style["linestyle"] = ":"
    return style


def _bounds(metric: str) -> tuple[float, float]:
    """A t-interval from few seeds can leave the metric's range; the band stops at the range instead."""
    return (-1.0, 1.0) if metric.endswith("qwk") else (0.0, 1.0)


def ablation_figure(
    table_data: pd.DataFrame,
    method_name: str,
    metrics: list[str],
    baselines: dict[str, list[BaselineScore]] | None = None,
) -> Figure:
    """Mean ± std over seeds per option set and batch size as dots with error bars, one panel per metric, on
    an axis fitted to the data: differences of a few hundredths vanish on bars drawn from 0. ``method_name``
    is the method's display name; ``baselines`` (metric -> scores) are drawn as labelled vertical lines."""
    fig, axes = _grid(
        len(metrics), f"Ablation: {method_name} options (dots: mean, error bars: std over seeds)", constrained=True
    )
    labels = [
        wrap(f"{r.setting}, b={r.batch_size}: {r.options}{' (main)' if r.main else ''}", 38)
        for r in table_data.itertuples()
    ]
    y = np.arange(len(labels))
    cols = _columns(len(metrics))
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        means = table_data[f"{metric}.mean"].to_numpy(dtype=float)
        stds = np.nan_to_num(table_data[f"{metric}.std"].to_numpy(dtype=float))
        for main, color in ((True, "tab:red"), (False, "tab:gray")):
            rows = table_data["main"].to_numpy(dtype=bool) == main
            ax.errorbar(means[rows], y[rows], xerr=stds[rows], fmt="o", color=color, capsize=3)
        scores = (baselines or {}).get(metric, [])
        top = [max(s.value for s in scores)] if scores else []
        ax.set_xlim(*_fitted(np.concatenate([means - stds, means + stds, top])))
        baseline_lines(ax, scores, vertical=True)
        ax.set_yticks(y, labels if i % cols == 0 else [""] * len(labels), fontsize=7)
        ax.set_ylim(len(labels) - 0.5, -0.5)
        ax.set_xlabel(f"{metric_label(metric)}\n(axis fitted to the data, not from 0)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
    return fig


def _fitted(values: np.ndarray) -> tuple[float, float]:
    """An axis range around the finite values with 8% room on each side."""
    finite = values[np.isfinite(values)]
    if not len(finite):
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    room = max(high - low, 0.01) * 0.08
    return low - room, high + room


def loss_figure(
    histories: pd.DataFrame,
    runs: pd.DataFrame,
    setting: str,
    title: str = LOSS_TITLE,
    ylabel: str = LOSS_LABEL,
    selected: str | None = None,
) -> Figure:
    """A per-epoch metric (training loss by default), mean over seeds (band: ±1 std), one panel per method
    and weights file, a line per batch size. ``selected`` names a column of ``runs`` holding each run's
    selected epoch (0-based, e.g. ``finetune.selected_epoch``), marked on its curve.

    Panels are separate because the methods' losses live on different scales.
    """
    columns = ["run_id", "method", "reference", "weights", "batch_size", *([selected] if selected else [])]
    methods = Methods.of(runs)
    merged = histories.merge(with_weights(runs)[columns], on="run_id")
    arms = sorted(
        set(zip(merged["method"], merged["reference"], merged["weights"], strict=True)),
        key=lambda a: methods.arm_sort_key(*a),
    )
    fig, axes = _grid(len(arms), f"{title} — {setting} (mean over seeds, band: ±1 std)")
    for ax, (method, reference, weights) in zip(axes, arms, strict=False):
        of_arm = merged[(merged["method"] == method) & (merged["weights"] == weights)]
        for batch, g in of_arm.groupby("batch_size"):
            curve = g.groupby("step")["value"].agg(["mean", "std", "count"])
            epochs = curve.index.to_numpy() + 1
            line = ax.plot(epochs, curve["mean"], marker="o", label=f"batch {batch} (n={int(curve['count'].max())})")
            ax.fill_between(epochs, curve["mean"] - curve["std"], curve["mean"] + curve["std"], alpha=0.15)
            if selected:
                picked = g[g["step"] == g[selected]]
                ax.scatter(picked["step"] + 1, picked["value"], marker="*", s=90, color=line[0].get_color(), zorder=3)
        ax.set_title(methods.label(method, reference, weights))
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def confusion_figure(reports: list[tuple[str, str, dict]], setting: str, picked: str) -> Figure:
    """Row-normalised confusion matrices (colour: recall share, text: counts), one run per method; ``picked``
    says which run (e.g. its highest validation score). Class names are wrapped and the layout is
    constrained, so no label prints over the next row or leaves the page."""
    fig, axes = _grid(len(reports), f"Confusion matrices on test — {setting}\n{picked}", constrained=True)
    cols = _columns(len(reports))
    for i, (ax, (method, run_name, report)) in enumerate(zip(axes, reports, strict=False)):
        counts = np.asarray(report["confusion_matrix"], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        raw = report.get("class_names") or [str(i) for i in range(len(counts))]
        names = [wrap(str(n).replace("_", " "), 12) for n in raw]
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (row, col), value in np.ndenumerate(counts):
            ax.text(
                col,
                row,
                f"{int(value)}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if shares[row, col] > 0.6 else "black",
            )
        ticks = range(len(names))
        size = 8 if len(names) <= 5 else 6
        ax.set_xticks(ticks, names, fontsize=size)
        ax.set_yticks(ticks, names if i % cols == 0 else [""] * len(names), fontsize=size)
        ax.set_xlabel("predicted class")
        if i % cols == 0:
            ax.set_ylabel("true class")
        ax.set_title(f"{method}\n{run_name}", fontsize=8)
    return fig


def _grid(panels: int, title: str, constrained: bool = False) -> tuple[Figure, list]:
    """A page with up to 2 x 3 panels; unused axes are removed. ``constrained``: matplotlib places the
    panels around their labels (for long tick labels), instead of the fixed margins the legend above needs."""
    cols = _columns(panels)
    rows = max(1, math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=PAGE, squeeze=False, layout="constrained" if constrained else None)
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.remove()
    fig.suptitle(title, fontsize=13)
    if not constrained:
        fig.subplots_adjust(hspace=0.45, wspace=0.3, top=0.88, bottom=0.1)
    return fig, flat[:panels]


def _columns(panels: int) -> int:
    return 1 if panels == 1 else 2 if panels in (2, 4) else 3


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, 0.95), fontsize=9)
