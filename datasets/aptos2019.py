"""APTOS 2019 (Kaggle ``train.csv`` + ``train_images``): test labels are private, so the labelled
set is split 70/15/15 by a seeded stratified split that the dataset records."""

from __future__ import annotations

from datasets.base import Dataset
from datasets.check import CheckReport
from datasets.labelcsv import integer_labels, read_rows
from datasets.plan import DatasetPlan, carve_splits, resolve_request
from datasets.reader import check_plan, load_plan
from datasets.request import DataRequest
from datasets.splits import DEFAULT_FRACTIONS

NAME = "aptos2019"
CLASS_NAMES = ("no_dr", "mild", "moderate", "severe", "proliferative_dr")


def plan(request: DataRequest) -> DatasetPlan:
    """Grades from ``train.csv`` split by ``request.split_seed``, without reading any image."""
    root, task = resolve_request(NAME, request)
    problems: list[str] = []
    csv_path = root / "train.csv"
    rows = read_rows(csv_path, ("id_code", "diagnosis"), problems)
    labelled = integer_labels(csv_path, rows, "diagnosis", len(CLASS_NAMES), problems)
    splits = carve_splits(labelled, DEFAULT_FRACTIONS, request.split_seed, root / "train_images", ".png", csv_path.name)
    record = {
        "method": "seeded stratified split",
        "source": csv_path.name,
        "seed": request.split_seed,
        "fractions": DEFAULT_FRACTIONS,
    }
    return DatasetPlan(NAME, task, CLASS_NAMES, splits, problems, record)


def check(request: DataRequest) -> CheckReport:
    return check_plan(plan(request), request)


def load(request: DataRequest) -> Dataset:
    return load_plan(plan(request), request)
