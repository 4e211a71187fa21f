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
from reports.comparison import with_weights  # noqa: E402

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


def metric_label(metric: str) -> str:
    protocol, split, name = metric.split(".", 2)
    name = name.replace("_", " ").replace("auc macro", "macro AUC").replace("f1 macro", "macro F1")
    return f"{protocol} {name} ({split})"


def method_colors(methods: Methods, present: Iterable[str]) -> dict[str, str]:
    """Method -> colour by its position in report order among the (non-reference) methods present; the
    palette repeats after nine methods."""
    ssl = [m for m in methods.in_order(present) if m not in methods.references]
    return {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(ssl)}


def batch_size_figure(stats: pd.DataFrame, setting: str, metrics: list[str], methods: Methods) -> Figure:
    """Mean metric against batch size per method, shaded 95% CI; references dashed, runs from weights dotted.
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
    _legend(fig, axes)
    return fig


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


def ablation_figure(table_data: pd.DataFrame, method_name: str, metrics: list[str]) -> Figure:
    """Horizontal bars (mean ± std over seeds) per option set and batch size, one panel per metric;
    ``method_name`` is the method's display name."""
    fig, axes = _grid(len(metrics), f"Ablation: {method_name} options (bars: mean, error bars: std over seeds)")
    labels = [
        f"{r.setting}, b={r.batch_size}: {r.options}{' (main)' if r.main else ''}" for r in table_data.itertuples()
    ]
    y = np.arange(len(labels))
    for i, (ax, metric) in enumerate(zip(axes, metrics, strict=False)):
        means = table_data[f"{metric}.mean"].to_numpy(dtype=float)
        stds = np.nan_to_num(table_data[f"{metric}.std"].to_numpy(dtype=float))
        colors = ["tab:red" if main else "tab:gray" for main in table_data["main"]]
        ax.barh(y, means, xerr=stds, color=colors, capsize=3)
        ax.set_yticks(y, labels if i % 2 == 0 else [""] * len(labels), fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(metric_label(metric))
        ax.grid(axis="x", alpha=0.3)
    fig.subplots_adjust(left=0.3)
    return fig


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


def confusion_figure(reports: list[tuple[str, str, dict]], setting: str, protocol: str) -> Figure:
    """Row-normalised confusion matrices (colour: recall share, text: counts) of each method's best run."""
    fig, axes = _grid(len(reports), f"Confusion matrices on test, best run per method ({protocol}) — {setting}")
    fig.subplots_adjust(wspace=0.55, left=0.12, right=0.97)
    cols = _columns(len(reports))
    for i, (ax, (method, run_name, report)) in enumerate(zip(axes, reports, strict=False)):
        counts = np.asarray(report["confusion_matrix"], dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        names = report.get("class_names") or [str(i) for i in range(len(counts))]
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
        ax.set_xticks(ticks, names, rotation=30, ha="right", fontsize=8)
        ax.set_yticks(ticks, names, fontsize=8)
        ax.set_xlabel("predicted class")
        if i % cols == 0:
            ax.set_ylabel("true class")
        ax.set_title(f"{method}\n{run_name}", fontsize=8)
    return fig


def _grid(panels: int, title: str) -> tuple[Figure, list]:
    """A page with up to 2 x 3 panels; unused axes are removed."""
    cols = _columns(panels)
    rows = max(1, math.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=PAGE, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[panels:]:
        ax.remove()
    fig.suptitle(title, fontsize=13)
    fig.subplots_adjust(hspace=0.45, wspace=0.3, top=0.88, bottom=0.1)
    return fig, flat[:panels]


def _columns(panels: int) -> int:
    return 1 if panels == 1 else 2 if panels in (2, 4) else 3


def _legend(fig: Figure, axes: list) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), bbox_to_anchor=(0.5, 0.95), fontsize=9)
