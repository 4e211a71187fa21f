"""A report rebuilt from a report's own ``runs.csv`` when the MLflow store is gone: the same analysis,
tables and summary; without the store there are no metric histories or artifacts, so no curves and no
confusion matrices (the report says so)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from reports.arms import METHOD_TAGS, resolve_method_tags
from reports.build import FORMATS, ReportData, ReportSummary, analyse_runs, check_formats, write_report
from reports.collect import TAG_COLUMNS

TEXT_PREFIXES = ("param.", "env.")  # read as written: "64" must stay "64", not become 64.0 beside a blank
NO_STORE_NOTE = (
    "Built from {name} without its MLflow store: training-loss curves, fine-tune curves and confusion "
    "matrices need the store's metric histories and artifacts, so they are left out."
)


def runs_from_csv(path: Path, method_tags: Mapping[str, Mapping[str, str]] | None = None) -> pd.DataFrame:
    """The run frame ``load_runs`` made, read back from the ``runs.csv`` a report wrote. ``method_tags``
    (method -> {method_display, method_order, method_baseline}, as bench logs them) names the methods of
    runs that predate the tags; tags a run logged are kept."""
    header = pd.read_csv(path, nrows=0).columns
    labels = ("run_name", "setting", "variant", "weights", "weights_file", *TAG_COLUMNS)
    text = [c for c in header if c.startswith(TEXT_PREFIXES) or c in labels]
    # Only an empty field is missing: a param logged as "None" stays the string bench logged.
    frame = pd.read_csv(path, dtype=dict.fromkeys(text, str), keep_default_na=False, na_values=[""])
    for column in ("start_time", "end_time"):
        frame[column] = pd.to_datetime(frame[column], utc=True, errors="coerce")
    frame["reference"] = frame["reference"].astype(str).str.lower() == "true"
    for column in ("batch_size", "seed"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce").astype("Int64")
    for column in labels:
        frame[column] = frame[column].fillna("").astype(str) if column in frame else ""
    for name, values in (method_tags or {}).items():
        rows = frame["method"] == name
        for tag in METHOD_TAGS:
            frame.loc[rows & (frame[tag] == ""), tag] = str(values[tag])
    return resolve_method_tags(frame)


def analyse_csv(
    runs_csv: Path,
    method_tags: Mapping[str, Mapping[str, str]] | None = None,
    test_class_counts: Mapping[str, Sequence[int]] | None = None,
) -> ReportData:
    """``analyse`` for a runs.csv; ``test_class_counts`` (setting or dataset -> count per class) gives the
    majority-class and chance scores where the runs logged none."""
    data = analyse_runs(runs_from_csv(Path(runs_csv), method_tags), class_counts=test_class_counts)
    data.notes.append(NO_STORE_NOTE.format(name=Path(runs_csv).name))
    return data


def build_report_from_runs_csv(
    runs_csv: Path,
    out: Path,
    method_tags: Mapping[str, Mapping[str, str]] | None = None,
    test_class_counts: Mapping[str, Sequence[int]] | None = None,
    formats: tuple[str, ...] = FORMATS,
) -> ReportSummary:
    """``build_report`` for a store that is gone: the PDF and tables from a report's ``runs.csv``. Writing
    into the folder the CSV came from rewrites it with the same runs (and the method tags resolved)."""
    check_formats(formats)
    data = analyse_csv(runs_csv, method_tags, test_class_counts)
    return write_report(data, Path(out), formats, None, f"{Path(runs_csv).name} (MLflow store not available)")
