"""MLflow runs -> one tidy DataFrame (one row per run, every status), plus the per-run extras a report draws.

Only MLflow is read, so a report can be made from runs logged on another machine.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run, ViewType
from mlflow.tracking import MlflowClient

from reports.arms import METHOD_TAGS, resolve_method_tags

FINISHED = "FINISHED"
# Run tags that become columns of the same name; the method tags (display name, report order, baseline)
# are then resolved per method, with fallbacks for runs logged before bench wrote them (reports.arms).
TAG_COLUMNS = (
    "method",
    "dataset",
    "task",
    "config_hash",
    "git_commit",
    "device",
    "failure_reason",
    "preset",  # smoke, cpu or paper; '' for runs from before bench logged it
    *METHOD_TAGS,
)
# Evaluation protocols whose final metrics are named ``<protocol>.<split>.<name>``, in report order.
PROTOCOLS = ("knn", "linear", "finetune")
FINAL_METRIC = re.compile(rf"^({'|'.join(PROTOCOLS)})\.(val|test)\.[a-z0-9_]+$")
# Params that describe the data and protocol a run was scored under; runs differing in them are not pooled.
PROTOCOL_PREFIXES = ("data.", "model.", "eval.", "train.epochs")
# Not pooling keys. The weights path does not identify the file (its sha256 does), and the sha256 is the
# ``weights`` column, which the tables group by: a reference from weights sits beside the methods it is
# compared with, as an arm of its own, instead of in a setting of its own.
PROTOCOL_EXCLUDED = (
    "data.name",
    "data.task",
    "data.root",
    "data.cache_dir",
    "eval.batch_size",
    "model.weights",
    "model.weights_sha256",
)
FINETUNE_PARAM = "eval.finetune_"
# bench resolves ``finetune_mode: auto`` per method (FG-SSL progressive with its grids, the rest plain), so
# these describe a method's fine-tune like its options do: a method's runs differing in them are variants.
FINETUNE_METHOD_PARAMS = ("eval.finetune_mode", "eval.finetune_grids")
NOT_RUN = "not run"
NO_WEIGHTS = ("", "None")  # how bench's params spell "no weights file"


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
    frame = resolve_method_tags(pd.DataFrame(rows))
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
    row["weights"] = weights_of(tags, params)
    row["weights_file"] = tags.get("weights", "") if row["weights"] else ""
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
        and c.removeprefix("param.") not in (*PROTOCOL_EXCLUDED, *FINETUNE_METHOD_PARAMS)
    ]
    values = pooling_values(frame, ["task", *keys])
    for dataset, group in values.groupby(frame["dataset"]):
        # A fine-tune setting only tells runs apart that both ran the fine-tune (NOT_RUN marks the others).
        differing = [k for k in ["task", *keys] if group.loc[group[k] != NOT_RUN, k].nunique() > 1]
        if differing:
            suffix = group[differing].apply(
                lambda r, d=differing: ", ".join(f"{k.removeprefix('param.')}={r[k]}" for k in d), axis=1
            )
            labels[group.index] = f"{dataset} (" + suffix + ")"
    return labels


def weights_of(tags: dict[str, str], params: dict[str, str]) -> str:
    """sha256 of the weights file the backbone started from, '' for none (older runs log neither)."""
    sha = tags.get("weights_sha256") or params.get("model.weights_sha256") or ""
    return "" if sha in NO_WEIGHTS else sha


def ran_finetune(frame: pd.DataFrame) -> pd.Series:
    """Whether each run selected the fine-tune protocol (runs from before it existed did not)."""
    column = "param.eval.protocols"
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return frame[column].fillna("").astype(str).str.split(",").map(lambda p: "finetune" in p).astype(bool)


def pooling_values(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The keys' values as they bear on the results. Adding the fine-tune changes no kNN or linear number,
    so the protocol list is compared without ``finetune``, and the fine-tune settings are NOT_RUN where it
    did not run (bench's config hash leaves them out there too): runs with and without it stay together."""
    values = frame[keys].fillna("").astype(str)
    ran = ran_finetune(frame)
    for key in keys:
        if key == "param.eval.protocols":
            values[key] = values[key].str.split(",").map(lambda p: ",".join(x for x in p if x != "finetune"))
        elif key.removeprefix("param.").startswith(FINETUNE_PARAM):
            values.loc[~ran, key] = NOT_RUN
    return values


def _variant_labels(frame: pd.DataFrame) -> pd.Series:
    """Per method and setting: '' for the option set with the most finished runs, else the options that differ.

    That keeps ablation runs (other ``method.*`` values, or another fine-tune mode or grids for the method)
    out of the main comparison and names them. The fine-tune's are compared among runs that fine-tuned only.
    """
    option_cols = [c for c in frame.columns if c.startswith("param.method.")]
    labels = _off_main(frame, frame[option_cols].fillna("").astype(str))
    finetune_cols = [f"param.{k}" for k in FINETUNE_METHOD_PARAMS if f"param.{k}" in frame]
    ran = ran_finetune(frame)
    finetune = _off_main(frame[ran], pooling_values(frame[ran], finetune_cols))
    for idx, label in finetune[finetune != ""].items():
        labels[idx] = f"{labels[idx]}, {label}" if labels[idx] else label
    return labels


def _off_main(frame: pd.DataFrame, options: pd.DataFrame) -> pd.Series:
    """Per setting and method, '' for the runs with the most common option values among finished runs,
    'name=value, ...' of the differing options for the rest."""
    labels = pd.Series("", index=frame.index, dtype=object)
    if options.empty or not len(options.columns):
        return labels
    for _, group in frame.groupby(["setting", "method"]):
        keys = options.loc[group.index].apply(tuple, axis=1)
        if keys.nunique() < 2:
            continue
        finished = keys[group["status"] == FINISHED]
        counts = (finished if len(finished) else keys).value_counts()
        main = max(counts.index, key=lambda k: (counts[k], k))
        differing = [c for c in options.columns if options.loc[group.index, c].nunique() > 1]
        for idx, key in keys.items():
            if key != main:
                values = dict(zip(options.columns, key, strict=True))
                labels[idx] = ", ".join(f"{_param_name(c)}={values[c]}" for c in differing)
    return labels


def _param_name(column: str) -> str:
    return column.removeprefix("param.method.").removeprefix("param.eval.")


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
    """Final evaluation metrics present in the store (``<protocol>.<val|test>.<name>``), in a stable order.

    Per-epoch fine-tune histories (``finetune.train.loss``, ``finetune.epoch_val.*``) and
    ``finetune.selected_epoch`` also start with a protocol name but are no scores to compare.
    """
    cols = [c for c in frame.columns if FINAL_METRIC.match(c) and np.issubdtype(frame[c].dtype, np.number)]
    return sorted(cols)
