"""The two entry points every reader shares: a plan becomes a ``CheckReport`` or a ``Dataset``."""

from __future__ import annotations

import warnings

import numpy as np

from datasets.base import Dataset, DatasetError, ImageSplit
from datasets.check import CheckReport, check_and_decode
from datasets.plan import DatasetPlan
from datasets.request import DataRequest


def check_plan(plan: DatasetPlan, request: DataRequest) -> CheckReport:
    """Every problem with the dataset, collected; never raises for problems in the data."""
    return check_and_decode(plan, request)[0]


def load_plan(plan: DatasetPlan, request: DataRequest) -> Dataset:
    """The dataset (cut to the request's subset, recorded in ``split_record["subset"]``), or
    ``DatasetError`` carrying the same text ``check`` would print; the report's warnings (a rebuilt
    cache, degenerate images) become one Python warning line each."""
    report, chosen, images = check_and_decode(plan, request)
    if not report.ok:
        raise DatasetError(report.format())
    for warning in report.warnings:
        warnings.warn(f"{plan.name}: {warning}", stacklevel=3)
    splits = {
        name: ImageSplit(images[name], np.asarray(split.labels, dtype=np.int64), split.ids)
        for name, split in chosen.splits.items()
    }
    record = {**chosen.split_record, "ids": {name: list(split.ids) for name, split in chosen.splits.items()}}
    return Dataset(plan.name, plan.task, plan.class_names, split_record=record, **splits)
