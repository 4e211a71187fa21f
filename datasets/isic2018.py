"""ISIC 2018 Task 3 (HAM10000) in its official layout.

Official validation and test sets are used when present. Otherwise they are carved out of training
by a seeded stratified split that keeps all images of one lesion on one side (HAM10000 has up to
six photographs per lesion, so an ungrouped split would leak), and the ids are recorded.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from datasets.base import Dataset
from datasets.check import CheckReport, some_ids
from datasets.labelcsv import one_hot_labels, read_rows
from datasets.plan import DatasetPlan, SplitPlan, carve_splits, resolve_request
from datasets.reader import check_plan, load_plan
from datasets.request import DataRequest

NAME = "isic2018"
CLASS_NAMES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")
COLUMNS = ("image", *CLASS_NAMES)
PARTS = {"train": "Training", "val": "Validation", "test": "Test"}
CARVED_FRACTION = 0.15
# Files that map training images to lesions, each with the name of its image column.
GROUPINGS = (("HAM10000_metadata.csv", "image_id"), ("ISIC2018_Task3_Training_LesionGroupings.csv", "image"))
UNGROUPED = (
    "NOT grouped by lesion (no HAM10000_metadata.csv or ISIC2018_Task3_Training_LesionGroupings.csv), "
    "so images of one lesion may fall on both sides"
)


def image_dir(root: Path, part: str) -> Path:
    return root / f"ISIC2018_Task3_{part}_Input"


def ground_truth_csv(root: Path, part: str) -> Path:
    """The ground truth at the root, or inside the folder the official zip unpacks to."""
    name = f"ISIC2018_Task3_{part}_GroundTruth.csv"
    nested = root / f"ISIC2018_Task3_{part}_GroundTruth" / name
    return nested if nested.is_file() else root / name


def lesion_groups(root: Path, image_ids: list[str], problems: list[str]) -> tuple[list[str] | None, str | None]:
    """Each image's lesion id and the file it came from, or ``(None, None)`` without a grouping file."""
    for file_name, image_column in GROUPINGS:
        path = root / file_name
        if path.is_file():
            rows = read_rows(path, (image_column, "lesion_id"), problems)
            lesion_of = {row.id: row.fields["lesion_id"] for row in rows}
            ungrouped = [image_id for image_id in image_ids if not lesion_of.get(image_id)]
            if ungrouped:
                problems.append(f"{path}: no lesion_id for {len(ungrouped)} training image(s): {some_ids(ungrouped)}")
            return [lesion_of.get(image_id) or image_id for image_id in image_ids], file_name
    return None, None


def plan(request: DataRequest) -> DatasetPlan:
    """Labels and image paths per split (official or carved), without reading any image."""
    root, task = resolve_request(NAME, request)
    problems: list[str] = []
    splits = {}
    for split, part in PARTS.items():
        csv_path = ground_truth_csv(root, part)
        if split == "train" or image_dir(root, part).exists() or csv_path.is_file():
            labelled = one_hot_labels(csv_path, read_rows(csv_path, COLUMNS, problems), CLASS_NAMES, problems)
            splits[split] = SplitPlan.of(labelled, image_dir(root, part), ".jpg", csv_path.name)
    record: dict = {"method": "official", "sources": {split: chosen.source for split, chosen in splits.items()}}
    carved = [split for split in PARTS if split not in splits]
    if carved:
        record |= _carve(root, splits, carved, request.split_seed, problems)
    return DatasetPlan(NAME, task, CLASS_NAMES, {split: splits[split] for split in PARTS}, problems, record)


def _carve(root: Path, splits: dict[str, SplitPlan], carved: list[str], seed: int, problems: list[str]) -> dict:
    """Replace ``splits["train"]`` by a seeded grouped split of it into train + ``carved``; say so."""
    training = splits.pop("train")
    groups, grouped_by = lesion_groups(root, list(training.ids), problems)
    fractions = {"train": 1 - CARVED_FRACTION * len(carved), **{split: CARVED_FRACTION for split in carved}}
    labelled = list(zip(training.ids, training.labels, strict=True))
    splits.update(carve_splits(labelled, fractions, seed, training.image_dir, ".jpg", training.source, groups))
    grouping = f"grouped by lesion_id from {grouped_by}" if grouped_by else UNGROUPED
    warnings.warn(
        f"isic2018: no official {' or '.join(carved)} set under {root}; carved {', '.join(carved)} out of "
        f"training with a seeded stratified split (seed {seed}) {grouping}",
        stacklevel=4,
    )
    return {
        "method": "seeded stratified split of training",
        "carved": carved,
        "seed": seed,
        "fractions": fractions,
        "grouped_by": grouped_by,
    }


def check(request: DataRequest) -> CheckReport:
    return check_plan(plan(request), request)


def load(request: DataRequest) -> Dataset:
    return load_plan(plan(request), request)
