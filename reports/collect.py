"""MLflow runs -> one tidy DataFrame (one row per run, every status), plus the per-run extras a report draws.

Only MLflow is read, so a report can be made from runs logged on another machine.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

FINISHED = "FINISHED"
TAG_COLUMNS = ("method", "dataset", "task", "config_hash", "git_commit", "device", "failure_reason")
# Params that describe the data and protocol a run was scored under; runs differing in them are not pooled.
PROTOCOL_PREFIXES = ("data.", "model.", "eval.", "train.epochs")
PROTOCOL_EXCLUDED = ("data.name", "data.task", "data.root", "data.cache_dir", "eval.batch_size")


def open_client(tracking_uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=tracking_uri)


def experiment_ids(client: MlflowClient, names: list[str] | None) -> dict[str, str]:
    """Experiment id -> name for the names asked for (all experiments when None); unknown names are an error."""
    available = {e.name: e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)}
    if names is None:
        return {eid: name for name, eid in available.items()}
    unknown = [name for name in names if name not in available]
    if unknown:
        known = ", ".join(sorted(available)) or "none"
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}; the store has: {known}")
    return {available[name]: name for name in names}


def load_runs(client: MlflowClient, experiments: dict[str, str]) -> pd.DataFrame:
    """Every run of the experiments as one row; FAILED, KILLED and RUNNING runs are kept and labelled."""
    rows = [_run_row(run, experiments) for run in _all_runs(client, list(experiments))]
    if not rows:
        names = ", ".join(sorted(experiments.values())) or "none"
        raise ValueError(f"the MLflow store has no runs in experiment(s): {names}")
    frame = pd.DataFrame(rows)
    frame["batch_size"] = pd.to_numeric(frame["batch_size"], errors="coerce").astype("Int64")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
    frame["setting"] = _setting_labels(frame)
    frame["variant"] = _variant_labels(frame)
    return frame.sort_values(["setting", "method", "variant", "batch_size", "seed", "start_time"]).reset_index(
        drop=True
    )


def _all_runs(client: MlflowClient, ids: list[str]) -> list[Run]:
    runs: list[Run] = []
    token = None
    while True:
        page = client.search_runs(ids, run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_row(run: Run, experiments: dict[str, str]) -> dict[str, object]:
    tags, params = run.data.tags, run.data.params
    row: dict[str, object] = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": experiments[run.info.experiment_id],
        "status": run.info.status,
        "start_time": pd.to_datetime(run.info.start_time, unit="ms", utc=True),
        "end_time": pd.to_datetime(run.info.end_time, unit="ms", utc=True) if run.info.end_time else pd.NaT,
        "reference": tags.get("reference", "false") == "true",
        "batch_size": tags.get("batch_size", params.get("train.batch_size")),
        "seed": tags.get("seed", params.get("train.seed")),
    }
    row.update({name: tags.get(name, "") for name in TAG_COLUMNS})
    row["method"] = row["method"] or params.get("method", "unknown")
    row["dataset"] = row["dataset"] or params.get("data.name", "unknown")
    row.update({f"env.{k}": v for k, v in tags.items() if k.startswith(("version.", "host."))})
    row.update({f"param.{k}": v for k, v in params.items()})
    row.update(run.data.metrics)
    return row


def _setting_labels(frame: pd.DataFrame) -> pd.Series:
    """Dataset label, extended with the task and protocol params only where runs of one dataset differ in them."""
    labels = frame["dataset"].astype(str).copy()
    keys = [
        c
        for c in frame.columns
        if c.startswith("param.")
        and c.removeprefix("param.").startswith(PROTOCOL_PREFIXES)
        and c.removeprefix("param.") not in PROTOCOL_EXCLUDED
    ]
    for dataset, group in frame.groupby("dataset"):
        differing = [k for k in ["task", *keys] if group[k].fillna("").nunique() > 1]
        if differing:
            suffix = (
                group[differing]
                .fillna("")
                .astype(str)
                .apply(lambda r, d=differing: ", ".join(f"{k.removeprefix('param.')}={r[k]}" for k in d), axis=1)
            )
            labels[group.index] = f"{dataset} (" + suffix + ")"
    return labels


def _variant_labels(frame: pd.DataFrame) -> pd.Series:
    """Per method and setting: '' for the option set with the most finished runs, else the options that differ.

    That keeps ablation runs (other ``method.*`` values) out of the main comparison and names them.
    """
    labels = pd.Series("", index=frame.index)
    option_cols = [c for c in frame.columns if c.startswith("param.method.")]
    if not option_cols:
        return labels
    options = frame[option_cols].fillna("").astype(str)
    for _, group in frame.groupby(["setting", "method"]):
        keys = options.loc[group.index].apply(tuple, axis=1)
        if keys.nunique() < 2:
            continue
        finished = keys[group["status"] == FINISHED]
        counts = (finished if len(finished) else keys).value_counts()
        main = max(counts.index, key=lambda k: (counts[k], k))
        differing = [c for c in option_cols if options.loc[group.index, c].nunique() > 1]
        for idx, key in keys.items():
            if key != main:
                values = dict(zip(option_cols, key, strict=True))
                labels[idx] = ", ".join(f"{c.removeprefix('param.method.')}={values[c]}" for c in differing)
    return labels


def finished(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == FINISHED]


def metric_histories(client: MlflowClient, run_ids: list[str], key: str) -> pd.DataFrame:
    """Long table run_id, step, value of one per-epoch metric (e.g. ``train.loss``)."""
    rows = [(run_id, m.step, m.value) for run_id in run_ids for m in client.get_metric_history(run_id, key)]
    return pd.DataFrame(rows, columns=["run_id", "step", "value"])


def test_report(client: MlflowClient, run_id: str, protocol: str) -> dict | None:
    """The run's ``<protocol>_test_report.json`` artifact (confusion matrix, class names), or None if absent."""
    name = f"{protocol}_test_report.json"
    if name not in {f.path for f in client.list_artifacts(run_id)}:
        return None
    with tempfile.TemporaryDirectory() as tmp, _quiet_downloads():
        return json.loads(Path(client.download_artifacts(run_id, name, tmp)).read_text())


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """MLflow draws a progress bar per artifact download; a report fetching a few small JSON files needs none."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key)
        else:
            os.environ[key] = previous


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """Final evaluation metrics present in the store, in a stable order."""
    cols = [c for c in frame.columns if c.startswith(("knn.", "linear.")) and np.issubdtype(frame[c].dtype, np.number)]
    return sorted(cols)
