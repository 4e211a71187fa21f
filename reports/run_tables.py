"""The report's tables about the runs themselves, per arm: what the embeddings encode, what a run cost,
and the runs left out of the statistics."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd

from reports.arms import Methods
from reports.collect import FINISHED
from reports.comparison import main_runs, with_weights
from reports.stats import summarize
from reports.tableformat import Table, mean_std, wrap

VARIANCE_PREFIX = "variance_share.test."


def _arm_groups(runs: pd.DataFrame, methods: Methods) -> Iterator[tuple[str, int, str, bool, str, pd.DataFrame]]:
    """(setting, batch size, method, reference, weights, its runs) per arm, in report order."""
    keys = sorted(
        {
            (s, int(b), m, r, w)
            for s, b, m, r, w in runs[["setting", "batch_size", "method", "reference", "weights"]].itertuples(
                index=False
            )
        },
        key=lambda k: (k[0], k[1], methods.arm_sort_key(k[2], k[3], k[4])),
    )
    for setting, batch, method, reference, weights in keys:
        group = runs[
            (runs["setting"] == setting)
            & (runs["batch_size"] == batch)
            & (runs["method"] == method)
            & (runs["weights"] == weights)
        ]
        yield setting, batch, method, reference, weights, group


def variance_table(frame: pd.DataFrame) -> Table | None:
    """What the frozen embeddings' variance follows per method and batch size (bench/variance.py): the
    class, and on generated data each nuisance factor; None when no run logged the shares."""
    methods = Methods.of(frame)
    runs = main_runs(frame)
    shares = sorted(
        (c for c in runs.columns if c.startswith(VARIANCE_PREFIX)), key=lambda c: (c != f"{VARIANCE_PREFIX}class", c)
    )
    if not shares:
        return None
    display_rows, data_rows = [], []
    for setting, batch, method, reference, weights, group in _arm_groups(runs, methods):
        disp = {"dataset": setting, "batch": str(batch), "method": methods.label(method, reference, weights)}
        data = {"setting": setting, "batch_size": batch, "method": method, "weights": weights, "runs": len(group)}
        for column in shares:
            name = column.removeprefix(VARIANCE_PREFIX)
            summary = summarize(_col(group, column))
            disp[name.replace("_", " ")] = mean_std(summary, 1.0, ".3f")
            data[f"{name}_mean"], data[f"{name}_std"] = summary.mean, summary.std
        display_rows.append(disp)
        data_rows.append(data)
    along_factors = ", and along each nuisance factor the synthetic generator drew independently of the class"
    something_else = "; a large nuisance share with a small class share means it learned something else"
    factors = len(shares) > 1
    notes = [
        "Share of the variance of the L2-normalised test embeddings (frozen backbone) that lies between the "
        f"classes{along_factors if factors else ''}; mean ± std over seeds.",
        f"A method that learned the class raises the class share above the untrained reference's"
        f"{something_else if factors else ''}.",
    ]
    title = "What the embeddings encode"
    return Table("embedding_variance", title, pd.DataFrame(display_rows), pd.DataFrame(data_rows), set(), notes)


def cost_table(frame: pd.DataFrame) -> Table:
    """Wall time and throughput per method and batch size; a memory column only if a run logged memory
    (a column saying 'not logged' in every row tells nothing)."""
    methods = Methods.of(frame)
    runs = main_runs(frame)
    memory_cols = [
        c
        for c in runs.columns
        if "memory" in c.lower() and pd.api.types.is_numeric_dtype(runs[c]) and runs[c].notna().any()
    ]
    display_rows, data_rows = [], []
    for setting, batch, method, reference, weights, group in _arm_groups(runs, methods):
        seconds = summarize(_col(group, "run.seconds"))
        speed = summarize(_col(group, "train.images_per_second"))
        disp = {
            "dataset": setting,
            "batch": str(batch),
            "method": methods.label(method, reference, weights),
            "runs": str(len(group)),
            "wall time (min)": mean_std(seconds, 60.0),
            "train images/s": mean_std(speed, 1.0, ".1f"),
        }
        data = {
            "setting": setting,
            "batch_size": batch,
            "method": method,
            "weights": weights,
            "runs": len(group),
            "run_seconds_mean": seconds.mean,
            "run_seconds_std": seconds.std,
            "images_per_second_mean": speed.mean,
            "images_per_second_std": speed.std,
        }
        if memory_cols:
            memory = summarize(_col(group, memory_cols[0]))
            disp[f"peak memory ({memory_cols[0]})"] = mean_std(memory, 1.0, ".0f")
            data["memory_mean"] = memory.mean
        display_rows.append(disp)
        data_rows.append(data)
    notes = [
        "Wall time: whole run (pretraining and evaluation, run.seconds). Images/s: pretraining throughput "
        "(last epoch's train.images_per_second), mean ± std over seeds.",
        "Times depend on the machine and on other load; compare within one report only.",
        *([] if memory_cols else ["Peak memory: no run logged it, so there is no column for it."]),
    ]
    return Table("cost", "Cost per run", pd.DataFrame(display_rows), pd.DataFrame(data_rows), set(), notes)


def excluded_runs_table(frame: pd.DataFrame) -> Table:
    """Every run that is not FINISHED, with why: these are never silently dropped."""
    methods = Methods.of(frame)
    runs = with_weights(frame[frame["status"] != FINISHED])
    disp = pd.DataFrame(
        {
            "run": runs["run_name"],
            "status": runs["status"],
            "method": [methods.arm(m, w) for m, w in zip(runs["method"], runs["weights"], strict=True)],
            "dataset": runs["setting"],
            "batch": runs["batch_size"].astype(str),
            "seed": runs["seed"].astype(str),
            "reason": runs["failure_reason"].fillna("").map(lambda r: wrap(r or "(none logged)", 60)),
        }
    ).reset_index(drop=True)
    data = runs[["run_id", "run_name", "status", "method", "setting", "batch_size", "seed", "failure_reason"]]
    notes = [
        "Runs that did not finish are left out of every statistic above. RUNNING may mean still in "
        "progress or a process that died without marking the run."
    ]
    return Table("excluded_runs", "Runs not in the statistics", disp, data.reset_index(drop=True), set(), notes)


def _col(group: pd.DataFrame, column: str) -> list[float]:
    return group[column].tolist() if column in group else []
