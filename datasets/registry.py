"""Dataset names -> readers. Readers are imported lazily so that using one never imports the others."""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datasets.base import Dataset, DatasetError
from datasets.request import DataRequest

if TYPE_CHECKING:  # check.py imports this module through plan.py
    from datasets.check import CheckReport


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset: where its reader lives, its tasks, the paper's jigsaw grids and
    whether labels are ordinal grades (then quadratic weighted kappa is reported).

    ``markers``: what every copy of the official layout holds, each as alternative paths under the data
    root; a folder holding any of them is recognised as the dataset (``datasets.layout``), one lacking
    some is incomplete. ``layout`` describes them for error messages.
    """

    name: str
    module: str
    tasks: tuple[str, ...]
    paper_grids: tuple[int, ...]
    needs_root: bool
    ordinal: bool = False
    title: str = ""
    markers: tuple[tuple[str, ...], ...] = ()
    layout: str = ""

    @property
    def default_task(self) -> str:
        return self.tasks[0]

    def reader(self):
        return importlib.import_module(self.module)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", "datasets.synthetic", ("4class",), (8, 4, 2), needs_root=False, title="synthetic"),
        DatasetSpec(
            "isic2017",
            "datasets.isic2017",
            ("3class", "melanoma", "sk"),
            (16, 8, 4),
            needs_root=True,
            title="ISIC 2017",
            markers=tuple(
                (f"ISIC-2017_{part}_{kind}",)
                for kind in ("Data", "Part3_GroundTruth.csv")
                for part in ("Training", "Validation", "Test_v2")
            ),
            layout="ISIC-2017_{Training,Validation,Test_v2}_Data/ and ISIC-2017_{Training,Validation,Test_v2}"
            "_Part3_GroundTruth.csv",
        ),
        DatasetSpec(
            "isic2018",
            "datasets.isic2018",
            ("7class",),
            (16, 8, 4),
            needs_root=True,
            title="ISIC 2018 Task 3",
            markers=(
                ("ISIC2018_Task3_Training_Input",),
                (
                    "ISIC2018_Task3_Training_GroundTruth.csv",
                    "ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv",
                ),
            ),
            layout="ISIC2018_Task3_Training_Input/ and ISIC2018_Task3_Training_GroundTruth.csv (optionally "
            "ISIC2018_Task3_{Validation,Test}_Input/ with their GroundTruth.csv, and HAM10000_metadata.csv)",
        ),
        DatasetSpec(
            "aptos2019",
            "datasets.aptos2019",
            ("5grade",),
            (32, 16, 8),
            needs_root=True,
            ordinal=True,
            title="APTOS 2019",
            markers=(("train.csv",), ("train_images",)),
            layout="train.csv and train_images/",
        ),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(unknown_name(name, DATASETS)) from None


def unknown_name(given: str, valid: Iterable[str]) -> str:
    """One line naming the valid datasets and, for a near miss (``ISIC2017``, ``isic-2018``), the one meant."""
    names = list(valid)
    scores = {name: difflib.SequenceMatcher(None, _fold(given), _fold(name)).ratio() for name in names}
    best = max(scores.values(), default=0.0)
    # Equally close names (isic2016) are all offered: picking one would be a guess.
    close = [repr(name) for name, score in scores.items() if score == best and score >= 0.6]
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"unknown dataset {given!r}{hint}; valid names: {', '.join(names)}"


def _fold(name: str) -> str:
    """Case, hyphens, underscores and spaces do not tell dataset names apart in a suggestion."""
    return "".join(c for c in name.lower() if c not in "-_ ")


def resolve_task(spec: DatasetSpec, task: str | None) -> str:
    if task is None:
        return spec.default_task
    if task not in spec.tasks:
        raise DatasetError(f"dataset {spec.name!r} has no task {task!r}; valid tasks: {', '.join(spec.tasks)}")
    return task


def load_dataset(name: str, request: DataRequest) -> Dataset:
    """Read (or generate) a dataset; raises ``DatasetError`` naming the file or row at fault."""
    spec, request = _resolve(name, request)
    return spec.reader().load(request)


def check_dataset(name: str, request: DataRequest) -> CheckReport:
    """Every problem with a dataset, collected (never raises for problems in the data itself)."""
    spec, request = _resolve(name, request)
    return spec.reader().check(request)


def _resolve(name: str, request: DataRequest) -> tuple[DatasetSpec, DataRequest]:
    """The spec and the request with its task filled in; readers of files check their root themselves
    (``datasets.plan.resolve_request``), so a reader called directly gives the same messages."""
    spec = get_dataset_spec(name)
    task = resolve_task(spec, request.task)
    if not spec.needs_root and request.root is not None and not request.root.is_dir():
        raise DatasetError(f"data root {request.root} is not a directory")
    return spec, dataclasses.replace(request, task=task)
