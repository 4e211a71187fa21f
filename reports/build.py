"""``build_report``: MLflow store -> tables (CSV, Markdown, LaTeX) and a PDF for people to read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from reports.arms import Methods
from reports.baselines import ReportFetcher, setting_baselines
from reports.collect import FINISHED, PROTOCOLS, experiment_ids, finished, load_runs, metric_columns, test_report
from reports.comparison import HEADLINE_METRICS, TEST_METRICS, cell_stats, comparisons
from reports.notes import missing_notes
from reports.result_tables import ablation_tables, comparison_table, finetune_note, sensitivity_table, tests_table
from reports.run_tables import cost_table, excluded_runs_table, variance_table
from reports.summary import summary_metrics, summary_paragraph
from reports.tableformat import Table, write_table

FORMATS = ("pdf", "md", "csv", "tex")
SMOKE = "smoke"


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
    baselines: pd.DataFrame  # majority-class and chance scores per setting (reports.baselines)
    smoke: bool  # some finished run used the smoke preset: its numbers mean nothing


def tables_dir(out: Path) -> Path:
    return out.parent / f"{out.stem}_tables"


def analyse(tracking_uri: str, experiments: list[str] | None) -> ReportData:
    """Load and compute; raises ValueError for an unknown experiment or a store without runs."""
    client = MlflowClient(tracking_uri=tracking_uri)
    runs = load_runs(client, experiment_ids(client, experiments))
    return analyse_runs(runs, lambda run_id, protocol: test_report(client, run_id, protocol))


def analyse_runs(
    runs: pd.DataFrame,
    fetch: ReportFetcher | None = None,
    class_counts: Mapping[str, Sequence[int]] | None = None,
) -> ReportData:
    """Statistics, tables and summary of a run frame (``load_runs``'s shape); ``fetch`` reads a run's test
    report and ``class_counts`` gives test class counts, both only for runs that logged no baselines."""
    present = metric_columns(runs)
    metrics = [m for m in present if m.split(".")[1] == "test" and m.split(".")[2] in TEST_METRICS]
    metrics.sort(key=lambda m: (PROTOCOLS.index(m.split(".")[0]), TEST_METRICS.index(m.split(".")[2])))
    headline = [m for m in HEADLINE_METRICS if m in metrics]
    methods = Methods.of(runs)
    stats = cell_stats(runs, metrics)
    tests = comparisons(runs, metrics)
    baselines = setting_baselines(runs, fetch, class_counts)
    smoke = "preset" in runs and bool((finished(runs)["preset"] == SMOKE).any())
    sensitivity = sensitivity_table(runs, headline)
    protocols = dict.fromkeys(m.split(".")[0] for m in metrics)
    tables = [comparison_table(stats, tests, p, metrics, methods, baselines) for p in protocols]
    note = finetune_note(runs)
    for table in tables:
        if table.name == "comparison_finetune" and note:
            table.notes.append(note)
    notes = missing_notes(runs, tests, methods)
    headline_tests = tests[tests["metric"].isin(headline)]
    if headline_tests["p_t"].notna().any():
        tables.append(tests_table(headline_tests, methods))
    elif not headline_tests.empty:
        notes.append("The paired-tests table is left out: no comparison has 2 matching seeds that differ.")
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
        summary_paragraph(stats, tests, sensitivity.data, summary_metrics(headline), methods, baselines, smoke)
        if headline
        else ("No finished run logged the test metrics, so there is nothing to compare.")
    )
    return ReportData(runs, metrics, headline, stats, tests, tables, summary, notes, methods, baselines, smoke)


def check_formats(formats: tuple[str, ...]) -> None:
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown report format(s) {', '.join(unknown)}; valid: {', '.join(FORMATS)}")


def build_report(
    tracking_uri: str, experiments: list[str] | None, out: Path, formats: tuple[str, ...] = FORMATS
) -> ReportSummary:
    """Write the PDF to ``out`` and every table as CSV/Markdown/LaTeX into ``<out stem>_tables/`` beside it."""
    check_formats(formats)
    data = analyse(tracking_uri, experiments)
    return write_report(data, Path(out), formats, MlflowClient(tracking_uri=tracking_uri), tracking_uri)


def write_report(
    data: ReportData, out: Path, formats: tuple[str, ...], client: MlflowClient | None, source: str
) -> ReportSummary:
    """The files of an analysed report; without a ``client`` (no store) the PDF has no curves or confusion
    matrices. ``source`` says on the title page where the runs came from."""
    from reports.pages import write_pdf  # matplotlib is loaded only when a PDF is made

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
        write_pdf(data, client, source, out)
        summary.pdf = out
        summary.files.insert(0, out)
    return summary


def _write_summary_md(data: ReportData, path: Path) -> Path:
    """The report's summary and notes as Markdown, so a README can quote the report's own words."""
    lines = []
    for line in data.summary.splitlines():
        if not line.startswith("- ") and lines:
            lines.append("")  # a paragraph or heading after a list needs a blank line in Markdown
        lines.append(line)
    text = "## Summary\n\n" + "\n".join(lines) + "\n"
    if data.notes:
        text += "\n## Not in this report\n\n" + "".join(f"- {note}\n" for note in data.notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _without_unused_weights(frame: pd.DataFrame) -> pd.DataFrame:
    """The weights columns only where some run started from a weights file, so the files of a store
    without any stay as they were before weights files existed."""
    unused = [c for c in ("weights", "weights_file") if c in frame and not frame[c].fillna("").astype(bool).any()]
    return frame.drop(columns=unused)
