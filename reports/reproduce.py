"""``reproduce.md``: what ``bench reproduce`` measured, method by method, beside the paper's published figures.

One row per method with the paper's figure (or "not published"), the measured fine-tuned test accuracy as
mean ± the half-width of its 95% t-interval over seeds (with n), the difference where the paper has a figure,
balanced accuracy, and the paired test against the baseline method; then the majority-class and chance
rows, what the numbers support (the report's own summary, whose claims follow ``reports.claims``), and the
ways the run departs from the authors' protocol. The statistics are the report's (``reports.build``), so
this page and ``bench report`` never disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from reports import claims
from reports.baselines import KINDS, scores_for
from reports.build import ReportData
from reports.collect import FINISHED
from reports.stats import Summary
from reports.summary import summary_paragraph

FIGURES_FILE = Path(__file__).with_name("paper_figures.yaml")
ACCURACY, BALANCED = "finetune.test.accuracy", "finetune.test.balanced_accuracy"
NOT_PUBLISHED = "not published"
SHRUNK_SCALES = ("smoke", "cpu")


@dataclass(frozen=True)
class PaperFigure:
    """One published number: a method's metric on a dataset, in percent, and where it was published."""

    dataset: str
    method: str
    metric: str
    value: float
    source: str


@dataclass(frozen=True)
class Protocol:
    """What the runs did, in the terms the page states them (filled in by bench/reproduce.py)."""

    dataset: str
    title: str
    task: str
    scale: str
    backbone: str
    image_size: int
    ssl_epochs: int
    batch_size: int
    finetune_epochs: int
    train_limit: int | None
    augmix: bool
    cutmix_alpha: float
    weights: str | None  # the weights file or name the backbone started from; None: random initialisation
    weights_sha256: str | None
    composites: bool  # some method is an "X + FG-SSL" composite


def paper_figures(dataset: str, path: Path = FIGURES_FILE) -> list[PaperFigure]:
    """The published figures for ``dataset`` from the figures file (values in percent)."""
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))["figures"]
    return [PaperFigure(**entry) for entry in entries if entry["dataset"] == dataset]


def reproduce_markdown(data: ReportData, figures: list[PaperFigure], protocol: Protocol) -> str:
    """The whole page for one dataset and scale."""
    lines = [f"# Reproducing FG-SSL (Park and Ryu) on {protocol.title}: {protocol.scale} scale", ""]
    if protocol.scale in SHRUNK_SCALES:
        lines += [
            f"**The {protocol.scale} scale is the paper's pipeline shrunk to run on a CPU: its numbers are not "
            "comparable to the paper's figures.**",
            "",
        ]
    lines += [_protocol_sentence(protocol), ""]
    stats = data.stats[data.stats["metric"].isin((ACCURACY, BALANCED)) & (data.stats["n"] > 0)]
    if stats.empty:
        lines += ["No run finished with a fine-tune result, so there is nothing to compare.", ""]
    for setting in dict.fromkeys(stats["setting"]):
        lines += _table(data, stats[stats["setting"] == setting], setting, figures)
    if not stats.empty:
        lines += ["## What the numbers support", "", *_supported(data, stats), ""]
    lines += ["## Protocol differences", "", *(f"- {item}" for item in protocol_differences(protocol)), ""]
    lines += _run_counts(data.runs)
    return "\n".join(lines).rstrip() + "\n"


def _protocol_sentence(p: Protocol) -> str:
    extras = ["RandomResizedCrop and flips", *(["AugMix"] if p.augmix else [])]
    if p.cutmix_alpha > 0:
        extras.append(f"CutMix (Beta({p.cutmix_alpha:g}, {p.cutmix_alpha:g}))")
    subset = f" (a seeded subset of at most {p.train_limit} training images)" if p.train_limit else ""
    return (
        f"Protocol: {p.backbone} at {p.image_size} px{subset}, task {p.task}; SSL pretraining for {p.ssl_epochs} "
        f"epochs at batch {p.batch_size}, then the progressive (PMG) fine-tune of every method for "
        f"{p.finetune_epochs} epochs with {', '.join(extras)}; the epoch with the best validation balanced "
        "accuracy is selected and the test split scored once with it."
    )


def _table(data: ReportData, stats: pd.DataFrame, setting: str, figures: list[PaperFigure]) -> list[str]:
    methods = data.methods
    baseline = methods.baseline_name
    published = {f.method: f for f in figures if f.metric == ACCURACY}
    header = (
        "| method | paper: accuracy % | measured accuracy % (mean ± 95% CI, n) | difference (points) "
        f"| measured balanced accuracy % | accuracy vs {baseline} (paired t, Holm) |"
    )
    rows = [f"## Fine-tuned test scores: {setting}", "", header, "|---|---|---|---|---|---|"]
    arms = stats.drop_duplicates(["method", "weights"])
    for arm in arms.itertuples():
        accuracy = _summary(stats, arm.method, arm.weights, ACCURACY)
        figure = published.get(arm.method)
        rows.append(
            "| "
            + " | ".join(
                [
                    methods.label(arm.method, arm.reference, arm.weights),
                    f"{figure.value:.1f} ({figure.source})" if figure else NOT_PUBLISHED,
                    _percent(accuracy),
                    _difference(accuracy, figure) if figure else "–",
                    _percent(_summary(stats, arm.method, arm.weights, BALANCED)),
                    _paired(data.tests, setting, arm.method, arm.weights, methods.baseline),
                ]
            )
            + " |"
        )
    for kind in KINDS.values():
        values = {m: _baseline(data.baselines, setting, m, kind) for m in (ACCURACY, BALANCED)}
        if any(v is not None for v in values.values()):
            cells = [f"{100 * v:.1f}" if v is not None else "–" for v in values.values()]
            rows.append(f"| {kind} (no learning) | – | {cells[0]} | – | {cells[1]} | – |")
    rows += [
        "",
        "Measured: mean over seeds ± the half-width of its 95% t-interval; n = seeds. Difference: measured "
        "mean minus the paper's figure, and whether the figure lies inside the measured interval. The "
        "majority-class and chance rows are what a model that learned nothing scores on this test split.",
        "",
    ]
    return rows


def _summary(stats: pd.DataFrame, method: str, weights: str, metric: str) -> Summary:
    row = stats[(stats["method"] == method) & (stats["weights"] == weights) & (stats["metric"] == metric)]
    if row.empty:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    r = row.iloc[0]
    return Summary(int(r["n"]), float(r["mean"]), float(r["std"]), float(r["ci_low"]), float(r["ci_high"]))


def _percent(s: Summary) -> str:
    if s.n == 0:
        return "–"
    if not claims.has_interval(s):
        return f"{100 * s.mean:.1f} (n={s.n}, no interval)"
    return f"{100 * s.mean:.1f} ± {100 * (s.ci_high - s.mean):.1f} (n={s.n})"


def _difference(s: Summary, figure: PaperFigure) -> str:
    if s.n == 0:
        return "–"
    where = claims.position(s, figure.value / 100)
    said = {
        "above": "the paper's figure is below the interval",
        "below": "the paper's figure is above the interval",
        "within": "the paper's figure is inside the interval",
        None: "no interval to judge by",
    }[where]
    return f"{100 * s.mean - figure.value:+.1f} ({said})"


def _paired(tests: pd.DataFrame, setting: str, method: str, weights: str, baseline: str | None) -> str:
    if baseline is None:
        return "–"
    if method == baseline and not weights:
        return "baseline"
    row = tests[
        (tests["setting"] == setting)
        & (tests["metric"] == ACCURACY)
        & (tests["method"] == method)
        & (tests["weights"] == weights)
    ]
    if row.empty or not math.isfinite(row.iloc[0]["p_t_holm"]):
        return "no test (under 2 matching seeds)"
    r = row.iloc[0]
    verdict = "differs" if r["p_t_holm"] < 0.05 else "no significant difference"
    return f"{100 * r['mean_diff']:+.1f} points, p = {r['p_t_holm']:.3f} ({verdict}, n={int(r['n_pairs'])})"


def _baseline(baselines: pd.DataFrame, setting: str, metric: str, kind: str) -> float | None:
    return next((s.value for s in scores_for(baselines, setting, metric) if s.name == kind), None)


def _supported(data: ReportData, stats: pd.DataFrame) -> list[str]:
    """The report's summary on the fine-tune scores: its claims follow ``reports.claims``."""
    metrics = [m for m in (BALANCED, ACCURACY) if m in set(stats["metric"])]
    text = summary_paragraph(stats, data.tests, pd.DataFrame(), metrics, data.methods, data.baselines)
    lines: list[str] = []
    for line in text.splitlines():
        if lines and not (line.startswith("- ") and lines[-1].startswith("- ")):
            lines.append("")  # Markdown: a blank line around every paragraph and list
        lines.append(line)
    return lines


def protocol_differences(p: Protocol) -> list[str]:
    """How these runs differ from the authors', named one by one (PAPER.md)."""
    items = [
        "Model selection: the fine-tune's epoch is selected on the validation split and the test split is "
        "scored once; the authors evaluated on the test split after every epoch (selection on test), which "
        "can only flatter their figures."
    ]
    items += _dataset_differences(p)
    items.append(_weights_difference(p))
    items.append(_scale_difference(p))
    items.append(
        "Fine-tune augmentation: crops are taken from images decoded at the run's size, scale (0.5, 1) (the "
        "authors: Resize 256, then RandomResizedCrop 224 at scale (0.08, 1)); AugMix draws its chains per "
        "image, as the authors' per-image pipeline did; CutMix draws a box and a label weight per image "
        "(the authors: one box per batch); the fine-tune optimiser is AdamW (the authors: SGD)."
    )
    if p.composites:
        items.append(
            "X + FG-SSL: how the paper added FG-SSL to Rotation, SimSiam and Barlow Twins is not published; "
            "the harness's reading is X's step then FG-SSL's four steps on one backbone (docs/methods.md)."
        )
    return items


def _dataset_differences(p: Protocol) -> list[str]:
    if p.dataset == "isic2018":
        return [
            "ISIC 2018 split: validation is carved out of the Task 3 training set by lesion (HAM10000 "
            "lesion_id), so no lesion sits on both sides; the authors split the training set at random "
            "(seed 18), which lets images of one lesion fall on both sides of their split."
        ]
    if p.dataset == "isic2017":
        return [
            f"ISIC 2017 task: {p.task} (official 2000/150/600 splits); the authors' code trains the binary "
            "seborrheic-keratosis task (`--set data.task=sk`), and the paper publishes no ISIC 2017 figure "
            "that we hold."
        ]
    if p.dataset == "aptos2019":
        return [
            "APTOS 2019 split: a seeded stratified split of the labelled train.csv (Kaggle's test labels are "
            "private); the authors' split is not published. No AugMix, as in the authors' APTOS recipe."
        ]
    return [f"Data: {p.title} is not a dataset of the paper."]


def _weights_difference(p: Protocol) -> str:
    if p.weights is None:
        return (
            "Weights: the backbone starts from random initialisation; the authors start from ImageNet "
            "weights (torchvision's ResNet-50, V1)."
        )
    sha = f", sha256 {p.weights_sha256[:12]}" if p.weights_sha256 else ""
    return f"Weights: the backbone starts from `{p.weights}`{sha}; the authors: torchvision's ImageNet ResNet-50 (V1)."


def _scale_difference(p: Protocol) -> str:
    run = f"{p.backbone}, {p.image_size} px, batch {p.batch_size}, {p.ssl_epochs} SSL epochs"
    paper = "ResNet-50, 224 px, batch 200, up to 1000 SSL epochs"
    if p.scale in SHRUNK_SCALES:
        return f"Scale: {p.scale}, shrunk ({run}); the paper: {paper}. Not comparable to the paper's figures."
    return f"Scale: {run}; the paper: {paper}."


def _run_counts(runs: pd.DataFrame) -> list[str]:
    counts = runs["status"].value_counts()
    lines = [f"Runs: {len(runs)}, " + ", ".join(f"{n} {status}" for status, n in counts.items()) + "."]
    unfinished = runs[runs["status"] != FINISHED]
    for run in unfinished.itertuples():
        reason = f": {run.failure_reason}" if getattr(run, "failure_reason", "") else ""
        lines.append(f"- {run.run_name} {run.status}{reason}")
    return lines
