"""ISIC 2017 Part 3 in its official layout, with its official train/val/test splits.

The ground truth has two one-hot columns; nevus is the row with both 0. The binary tasks
(``melanoma``, ``sk``) relabel the same rows, so all tasks share files, splits and cache.
"""

from __future__ import annotations

from datasets.base import Dataset
from datasets.check import CheckReport
from datasets.labelcsv import one_hot_labels, read_rows
from datasets.plan import DatasetPlan, SplitPlan, resolve_request
from datasets.reader import check_plan, load_plan
from datasets.request import DataRequest

NAME = "isic2017"
PARTS = {"train": "Training", "val": "Validation", "test": "Test_v2"}
COLUMNS = ("image_id", "melanoma", "seborrheic_keratosis")
CLASS_NAMES = {
    "3class": ("melanoma", "seborrheic_keratosis", "nevus"),
    "melanoma": ("other", "melanoma"),
    "sk": ("other", "seborrheic_keratosis"),
}
# Task label of each 3-class label (melanoma, seborrheic keratosis, nevus).
TASK_LABELS = {"3class": (0, 1, 2), "melanoma": (1, 0, 0), "sk": (0, 1, 0)}


def plan(request: DataRequest) -> DatasetPlan:
    """Labels and image paths of the three official splits, without reading any image."""
    root, task = resolve_request(NAME, request)
    problems: list[str] = []
    splits = {}
    for split, part in PARTS.items():
        csv_path = root / f"ISIC-2017_{part}_Part3_GroundTruth.csv"
        rows = read_rows(csv_path, COLUMNS, problems)
        three_class = one_hot_labels(csv_path, rows, COLUMNS[1:], problems, implicit_last=True)
        labelled = [(image_id, TASK_LABELS[task][label]) for image_id, label in three_class]
        splits[split] = SplitPlan.of(labelled, root / f"ISIC-2017_{part}_Data", ".jpg", csv_path.name)
    record = {"method": "official", "sources": {split: chosen.source for split, chosen in splits.items()}}
    return DatasetPlan(NAME, task, CLASS_NAMES[task], splits, problems, record)


def check(request: DataRequest) -> CheckReport:
    return check_plan(plan(request), request)


def load(request: DataRequest) -> Dataset:
    return load_plan(plan(request), request)
