"""``build_report``: MLflow store -> tables (CSV, Markdown, LaTeX) and a PDF for people to read."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.backends.backend_pdf import PdfPages
from mlflow.tracking import MlflowClient

from reports import plots
from reports.arms import Methods, short_sha
from reports.collect import (
    FINISHED,
    PROTOCOLS,
    experiment_ids,
    finished,
    load_runs,
    metric_columns,
    metric_histories,
    test_report,
)
from reports.comparison import HEADLINE_METRICS, TEST_METRICS, cell_stats, comparisons, main_runs
from reports.pdf import table_pages, text_page
from reports.result_tables import ablation_tables, comparison_table, finetune_note, sensitivity_table, tests_table
from reports.run_tables import cost_table, excluded_runs_table, variance_table
from reports.summary import summary_metrics, summary_paragraph
from reports.tableformat import Table, write_table

FORMATS = ("pdf", "md", "csv", "tex")
FINETUNE_CURVES = (
    ("finetune.train.loss", "Fine-tune training loss per epoch", "finetune.train.loss (sum of the step losses)"),
    (
        "finetune.epoch_val.balanced_accuracy",
        "Fine-tune val balanced accuracy (stars: selected epochs)",
        "finetune val balanced accuracy",
    ),
)


@dataclass
class ReportSummary:
    """What was written and what the report could not show (and why)."""

    pdf: Path | None
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    runs: int = 0
    finished_runs: int = 0


@dataclass
class ReportData:
    """Everything the report shows, computed once: the tidy runs and the statistics over them."""

    runs: pd.DataFrame
    metrics: list[str]
    headline: list[str]
    stats: pd.DataFrame
    tests: pd.DataFrame
    tables: list[Table]
    summary: str
    notes: list[str]
    methods: Methods  # display names, report order and the baseline, from the runs' method tags


def tables_dir(out: Path) -> Path:
    return out.parent / f"{out.stem}_tables"


def analyse(tracking_uri: str, experiments: list[str] | None) -> ReportData:
    """Load and compute; raises ValueError for an unknown experiment or a store without runs."""
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = load_runs(client, experiment_ids(client, experiments))
    present = metric_columns(runs)
    metrics = [m for m in present if m.split(".")[1] == "test" and m.split(".")[2] in TEST_METRICS]
    metrics.sort(key=lambda m: (PROTOCOLS.index(m.split(".")[0]), TEST_METRICS.index(m.split(".")[2])))
    headline = [m for m in HEADLINE_METRICS if m in metrics]
    methods = Methods.of(runs)
    stats = cell_stats(runs, metrics)
    tests = comparisons(runs, metrics)
    sensitivity = sensitivity_table(runs, headline)
    protocols = dict.fromkeys(m.split(".")[0] for m in metrics)
    tables = [comparison_table(stats, tests, p, metrics, methods) for p in protocols]
    note = finetune_note(runs)
    for table in tables:
        if table.name == "comparison_finetune" and note:
            table.notes.append(note)
    if not tests.empty:
        tables.append(tests_table(tests[tests["metric"].isin(headline)], methods))
    if not sensitivity.data.empty and sensitivity.data["batch_sizes"].max() >= 2:
        tables.append(sensitivity)
    tables.extend(ablation_tables(runs, headline))
    variance = variance_table(runs)
    if variance is not None:
        tables.append(variance)
    tables.append(cost_table(runs))
    if (runs["status"] != FINISHED).any():
        tables.append(excluded_runs_table(runs))
    summary = (
        summary_paragraph(stats, tests, sensitivity.data, summary_metrics(headline), methods)
        if headline
        else ("No finished run logged the test metrics, so there is nothing to compare.")
    )
    notes = _missing_notes(runs, tests, methods)
    return ReportData(runs, metrics, headline, stats, tests, tables, summary, notes, methods)


def build_report(
    tracking_uri: str, experiments: list[str] | None, out: Path, formats: tuple[str, ...] = FORMATS
) -> ReportSummary:
    """Write the PDF to ``out`` and every table as CSV/Markdown/LaTeX into ``<out stem>_tables/`` beside it."""
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; valid: {', '.join(FORMATS)}")
    out = Path(out)
    data = analyse(tracking_uri, experiments)
    summary = ReportSummary(
        pdf=None,
        notes=list(data.notes),
        runs=len(data.runs),
        finished_runs=int((data.runs["status"] == FINISHED).sum()),
    )
    folder = tables_dir(out)
    for table in data.tables:
        summary.files.extend(write_table(replace(table, data=_without_unused_weights(table.data)), folder, formats))
    if "md" in formats:
        summary.files.append(_write_summary_md(data, folder / "summary.md"))
    if "csv" in formats:
        _without_unused_weights(data.runs).to_csv(folder / "runs.csv", index=False)
        _without_unused_weights(data.stats).to_csv(folder / "cell_statistics.csv", index=False)
        summary.files.extend([folder / "runs.csv", folder / "cell_statistics.csv"])
    if "pdf" in formats:
        out.parent.mkdir(parents=True, exist_ok=True)
        _write_pdf(data, MlflowClient(tracking_uri=tracking_uri), tracking_uri, out)
        summary.pdf = out
        summary.files.insert(0, out)
    return summary


def _write_summary_md(data: ReportData, path: Path) -> Path:
    """The report's summary and notes as Markdown, so a README can quote the report's own words."""
    notes = "".join(f"- {note}\n" for note in data.notes)
    text = "## Summary\n\n" + "\n\n".join(data.summary.splitlines()) + "\n"
    if notes:
        text += "\n## Not in this report\n\n" + notes
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _without_unused_weights(frame: pd.DataFrame) -> pd.DataFrame:
    """The weights columns only where some run started from a weights file, so the files of a store
    without any stay as they were before weights files existed."""
    unused = [c for c in ("weights", "weights_file") if c in frame and not frame[c].fillna("").astype(bool).any()]
    return frame.drop(columns=unused)


def _write_pdf(data: ReportData, client: MlflowClient, tracking_uri: str, out: Path) -> None:
    with PdfPages(out) as pdf:
        title = text_page("FG-SSL benchmark report", _title_blocks(data, tracking_uri))
        _save(pdf, title)
        for table in data.tables:
            for page in table_pages(table):
                _save(pdf, page)
        for figure in _figures(data, client):
            _save(pdf, figure)
        info = pdf.infodict()
        info["Title"] = "FG-SSL benchmark report"
        info["Creator"] = "fgssl-bench reports"


def _save(pdf: PdfPages, figure) -> None:
    pdf.savefig(figure)
    plt.close(figure)


def _figures(data: ReportData, client: MlflowClient):
    runs = main_runs(data.runs)
    for setting in sorted(runs["setting"].unique()):
        by_setting = runs[runs["setting"] == setting]
        if by_setting["batch_size"].nunique() >= 2 and data.headline:
            yield plots.batch_size_figure(data.stats, setting, data.headline, data.methods)
        histories = metric_histories(client, by_setting["run_id"].tolist(), "train.loss")  # random_init has none
        if not histories.empty:
            yield plots.loss_figure(histories, by_setting, setting)
        if "finetune" in {m.split(".")[0] for m in data.metrics}:
            for key, title, label in FINETUNE_CURVES:
                histories = metric_histories(client, by_setting["run_id"].tolist(), key)
                selected = (
                    "finetune.selected_epoch" if "epoch_val" in key and "finetune.selected_epoch" in runs else None
                )
                if not histories.empty:
                    yield plots.loss_figure(histories, by_setting, setting, title, label, selected)
        for protocol, metric in _confusion_metrics(data.metrics):
            reports = _best_reports(client, by_setting, protocol, metric, data.methods)
            if reports:
                yield plots.confusion_figure(reports, setting, f"{protocol}, best by {metric.split('.')[-1]}")
    for table in data.tables:
        if table.name.startswith("ablation_"):
            method = data.methods.name(table.name.removeprefix("ablation_"))
            yield plots.ablation_figure(table.data, method, data.headline)


def _confusion_metrics(metrics: list[str]) -> list[tuple[str, str]]:
    """Per protocol, the metric that picks the best run: balanced accuracy if logged, else accuracy."""
    chosen = []
    for protocol in dict.fromkeys(m.split(".")[0] for m in metrics):
        for name in ("balanced_accuracy", "accuracy"):
            if f"{protocol}.test.{name}" in metrics:
                chosen.append((protocol, f"{protocol}.test.{name}"))
                break
    return chosen


def _best_reports(
    client: MlflowClient, runs: pd.DataFrame, protocol: str, metric: str, methods: Methods
) -> list[tuple[str, str, dict]]:
    """The best run's test report per method, and per weights file, which makes a method another arm."""
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
            caption = f"{best['run_name']}\n{metric.split('.')[-1]} {best[metric]:.3f}"
            reports.append((methods.arm(method, weights), caption, report))
    return reports


def _title_blocks(data: ReportData, tracking_uri: str) -> list[tuple[str, str]]:
    runs, methods = data.runs, data.methods
    status = ", ".join(f"{count} {name}" for name, count in runs["status"].value_counts().items())
    env = {
        c.removeprefix("env."): ", ".join(sorted(runs[c].dropna().astype(str).unique()))
        for c in runs.columns
        if c.startswith("env.")
    }
    versions = "; ".join(f"{k.removeprefix('version.')} {v}" for k, v in env.items() if k.startswith("version."))
    hosts = "; ".join(f"{k.removeprefix('host.')}: {v}" for k, v in env.items() if k.startswith("host."))
    ok = finished(runs)
    what = (
        f"Experiment(s): {', '.join(sorted(runs['experiment'].unique()))} in {tracking_uri}\n"
        f"Runs: {len(runs)} ({status}). Methods: {', '.join(map(methods.name, methods.in_order(runs['method'])))}. "
        f"Datasets: {', '.join(sorted(runs['setting'].unique()))}. "
        f"Batch sizes: {_join_ints(runs['batch_size'])}. Seeds: {_join_ints(runs['seed'])}.\n"
        f"Runs made {runs['start_time'].min():%Y-%m-%d %H:%M} to {runs['end_time'].max():%Y-%m-%d %H:%M} UTC; "
        f"report made {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Finished runs in the statistics: {len(ok)}."
    )
    provenance = (
        f"Harness git commit(s): {', '.join(sorted(runs['git_commit'].replace('', 'unknown').unique()))}\n"
        f"Hardware: {hosts or 'not logged'}; device(s): {', '.join(sorted(runs['device'].replace('', '?').unique()))}\n"
        f"Package versions: {versions or 'not logged'}"
    )
    weights = _weights_text(runs, methods)
    if weights:
        provenance += f"\nWeights files (by sha256; runs from different files are never pooled): {weights}"
    blocks = [("What was run", what), ("Provenance", provenance), ("Summary", data.summary)]
    if data.notes:
        blocks.append(("Not in this report", "\n".join(f"- {note}" for note in data.notes)))
    curves = "fine-tune curves, " if "finetune" in {m.split(".")[0] for m in data.metrics} else ""
    blocks.append(
        (
            "Contents",
            "Tables: " + "; ".join(t.title for t in data.tables) + ". Then figures: metric vs "
            f"batch size, training loss curves, {curves}confusion matrices of the best run per method, ablations.",
        )
    )
    return blocks


def _missing_notes(runs: pd.DataFrame, tests: pd.DataFrame, methods: Methods) -> list[str]:
    """What a fuller sweep would add: said in the report and returned to the caller instead of failing."""
    notes = []
    ok = finished(runs)
    trained = methods.in_order(ok[~ok["reference"]]["method"])
    if len(trained) < 2:
        notes.append(
            f"Only {len(trained)} trained method(s) finished ({', '.join(map(methods.name, trained)) or 'none'}): "
            "no comparison between methods."
        )
    untagged = [m for m in methods.in_order(runs.loc[~runs["reference"], "method"]) if not methods.tagged(m)]
    baseline = methods.baseline_name
    if untagged:
        notes.append(
            f"Runs of {', '.join(untagged)} predate the method tags (method_display, method_order, "
            "method_baseline): they are shown under their method names and sorted after any tagged methods"
            + (", and no run names a baseline, so there are no paired tests." if methods.baseline is None else ".")
        )
    if methods.baseline is None:
        if not untagged:
            notes.append("No run names a baseline method (tag method_baseline): no paired tests.")
    elif methods.baseline not in trained:
        notes.append(
            f"No finished {baseline} runs: no paired tests against {baseline} and no check of its batch-size claim."
        )
    elif tests.empty and len(trained) >= 2:
        notes.append(f"{baseline} never ran at the same dataset and batch size as another method: no paired tests.")
    if ok["batch_size"].nunique() < 2:
        notes.append("A single batch size: batch-size sensitivity is not assessed.")
    if not ok.empty and ok.groupby(["setting", "batch_size", "method"])["seed"].nunique().max() < 3:
        notes.append("Fewer than 3 seeds in every cell: spreads and intervals are rough (cells marked †).")
    if not (ok["variant"] != "").any():
        notes.append("No runs differ in method options: no hierarchy ablation table.")
    failed = runs[runs["status"] != FINISHED]
    if len(failed):
        notes.append(f"{len(failed)} run(s) did not finish and are listed in 'Runs not in the statistics'.")
    return notes


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
