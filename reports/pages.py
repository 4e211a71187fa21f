"""The PDF of a report: title pages (what ran, provenance, summary, what was left out), the tables, then the
figures. Without an MLflow client (a report rebuilt from runs.csv) there are no curves or confusion matrices."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from reports import plots
from reports.arms import Methods, short_sha
from reports.baselines import BaselineScore, scores_for
from reports.build import ReportData
from reports.collect import finished, metric_histories, test_report
from reports.comparison import main_runs
from reports.pdf import table_pages, text_pages
from reports.summary import SMOKE_WARNING

TITLE = "FG-SSL benchmark report"
FINETUNE_CURVES = (
    ("finetune.train.loss", "Fine-tune training loss per epoch", "finetune.train.loss (sum of the step losses)"),
    (
        "finetune.epoch_val.balanced_accuracy",
        "Fine-tune val balanced accuracy (stars: selected epochs)",
        "finetune val balanced accuracy",
    ),
)


def write_pdf(data: ReportData, client: MlflowClient | None, source: str, out: Path) -> None:
    figures = list(_figures(data, client))
    with PdfPages(out) as pdf:
        for page in text_pages(TITLE, _title_blocks(data, source, [name for name, _ in figures])):
            _save(pdf, page)
        for table in data.tables:
            for page in table_pages(table):
                _save(pdf, page)
        for _, figure in figures:
            _save(pdf, figure)
        info = pdf.infodict()
        info["Title"] = TITLE
        info["Creator"] = "fgssl-bench reports"


def _save(pdf: PdfPages, figure: Figure) -> None:
    pdf.savefig(figure)
    plt.close(figure)


def _figures(data: ReportData, client: MlflowClient | None) -> Iterator[tuple[str, Figure]]:
    """(what it shows, figure) in report order."""
    runs = main_runs(data.runs)
    for setting in sorted(runs["setting"].unique()):
        by_setting = runs[runs["setting"] == setting]
        scores = _scores(data, setting, data.headline)
        if by_setting["batch_size"].nunique() >= 2 and data.headline:
            yield (
                "metric vs batch size",
                plots.batch_size_figure(data.stats, setting, data.headline, data.methods, scores),
            )
        if client is None:
            continue
        histories = metric_histories(client, by_setting["run_id"].tolist(), "train.loss")  # random_init has none
        if not histories.empty:
            yield "training loss curves", plots.loss_figure(histories, by_setting, setting)
        if "finetune" in {m.split(".")[0] for m in data.metrics}:
            for key, title, label in FINETUNE_CURVES:
                histories = metric_histories(client, by_setting["run_id"].tolist(), key)
                selected = (
                    "finetune.selected_epoch" if "epoch_val" in key and "finetune.selected_epoch" in runs else None
                )
                if not histories.empty:
                    yield "fine-tune curves", plots.loss_figure(histories, by_setting, setting, title, label, selected)
        for protocol in dict.fromkeys(m.split(".")[0] for m in data.metrics):
            picked = _confusion_reports(client, by_setting, protocol, data.methods)
            if picked is not None:
                yield "confusion matrices", plots.confusion_figure(picked[0], setting, picked[1])
    for table in data.tables:
        if table.name.startswith("ablation_"):
            method = data.methods.name(table.name.removeprefix("ablation_"))
            settings = table.data["setting"].unique()
            scores = _scores(data, settings[0], data.headline) if len(settings) == 1 else {}
            yield "ablations", plots.ablation_figure(table.data, method, data.headline, scores)


def _scores(data: ReportData, setting: str, metrics: list[str]) -> dict[str, list[BaselineScore]]:
    return {m: scores_for(data.baselines, setting, m) for m in metrics}


def _confusion_reports(
    client: MlflowClient, runs: pd.DataFrame, protocol: str, methods: Methods
) -> tuple[list[tuple[str, str, dict]], str] | None:
    """Per method (and weights file, which makes another arm) the test report of its run picked by the
    validation score (balanced accuracy, else accuracy; the test score only where no validation score was
    logged), and a line that says which. None if no run has a report."""
    choices = [f"{protocol}.{split}.{name}" for split in ("val", "test") for name in ("balanced_accuracy", "accuracy")]
    metric = next((m for m in choices if m in runs and runs[m].notna().any()), None)
    if metric is None:
        return None
    reports = []
    arms = sorted(
        set(zip(runs["method"], runs["weights"], strict=True)), key=lambda a: methods.arm_sort_key(a[0], False, a[1])
    )
    for method, weights in arms:
        candidates = runs[(runs["method"] == method) & (runs["weights"] == weights)].dropna(subset=[metric])
        if candidates.empty:
            continue
        best = candidates.loc[candidates[metric].idxmax()]
        report = test_report(client, best["run_id"], protocol)
        if report is not None:
            caption = f"{best['run_name']}\n{_metric_words(metric)} {best[metric]:.3f}"
            reports.append((methods.arm(method, weights), caption, report))
    split = metric.split(".")[1]
    why = "" if split == "val" else " (no validation score logged)"
    picked = f"{protocol}: per method, its run with the highest {_metric_words(metric)}{why}"
    return (reports, picked) if reports else None


def _metric_words(metric: str) -> str:
    _, split, name = metric.split(".", 2)
    return f"{'validation' if split == 'val' else split} {name.replace('_', ' ')}"


def _title_blocks(data: ReportData, source: str, figures: list[str]) -> list[tuple[str, str]]:
    runs, methods = data.runs, data.methods
    status = ", ".join(f"{count} {name}" for name, count in runs["status"].value_counts().items())
    env = {
        c.removeprefix("env."): ", ".join(sorted(runs[c].dropna().astype(str).unique()))
        for c in runs.columns
        if c.startswith("env.")
    }
    versions = "; ".join(f"{k.removeprefix('version.')} {v}" for k, v in env.items() if k.startswith("version."))
    hosts = "; ".join(f"{k.removeprefix('host.')}: {v}" for k, v in env.items() if k.startswith("host."))
    presets = sorted(p for p in runs.get("preset", pd.Series(dtype=str)).fillna("").astype(str).unique() if p)
    what = (
        f"Experiment(s): {', '.join(sorted(runs['experiment'].unique()))} from {source}\n"
        f"Runs: {len(runs)} ({status}). Methods: {', '.join(map(methods.name, methods.in_order(runs['method'])))}. "
        f"Datasets: {', '.join(sorted(runs['setting'].unique()))}. "
        f"Batch sizes: {_join_ints(runs['batch_size'])}. Seeds: {_join_ints(runs['seed'])}. "
        f"Preset(s): {', '.join(presets) or 'not logged'}.\n"
        f"Runs made {runs['start_time'].min():%Y-%m-%d %H:%M} to {runs['end_time'].max():%Y-%m-%d %H:%M} UTC; "
        f"report made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Finished runs in the statistics: {len(finished(runs))}."
    )
    provenance = (
        f"Harness git commit(s): {', '.join(sorted(runs['git_commit'].replace('', 'unknown').unique()))}\n"
        f"Hardware: {hosts or 'not logged'}; device(s): {', '.join(sorted(runs['device'].replace('', '?').unique()))}\n"
        f"Package versions: {versions or 'not logged'}"
    )
    weights = _weights_text(runs, methods)
    if weights:
        provenance += f"\nWeights files (by sha256; runs from different files are never pooled): {weights}"
    blocks = [("Warning", SMOKE_WARNING)] if data.smoke else []
    blocks += [("What was run", what), ("Provenance", provenance), ("Summary", data.summary)]
    if data.notes:
        blocks.append(("Not in this report", "\n".join(f"- {note}" for note in data.notes)))
    drawn = ", ".join(dict.fromkeys(figures)) or "none"
    blocks.append(("Contents", "Tables: " + "; ".join(t.title for t in data.tables) + f". Then figures: {drawn}."))
    return blocks


def _weights_text(runs: pd.DataFrame, methods: Methods) -> str:
    """Each weights file: short and full sha256, file name(s) and the methods started from it."""
    parts = []
    for sha, group in runs[runs["weights"] != ""].groupby("weights", sort=True):
        names = ", ".join(sorted({str(n) for n in group.get("weights_file", pd.Series(dtype=str)).dropna() if n}))
        arms = ", ".join(map(methods.name, methods.in_order(group["method"])))
        parts.append(f"{short_sha(sha)} = {sha}{f' ({names})' if names else ''}: {arms}")
    return "; ".join(parts)


def _join_ints(values: pd.Series) -> str:
    return ", ".join(str(int(v)) for v in sorted(values.dropna().unique())) or "–"
