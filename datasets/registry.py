"""Dataset names -> readers. Readers are imported lazily so that using one never imports the others."""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datasets.base import Dataset, DatasetError
from datasets.request import DataRequest

if TYPE_CHECKING:  # check.py imports this module through plan.py
    from datasets.check import CheckReport


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset: where its reader lives, its tasks, the paper's jigsaw grids and
    whether labels are ordinal grades (then quadratic weighted kappa is reported)."""

    name: str
    module: str
    tasks: tuple[str, ...]
    paper_grids: tuple[int, ...]
    needs_root: bool
    ordinal: bool = False

    @property
    def default_task(self) -> str:
        return self.tasks[0]

    def reader(self):
        return importlib.import_module(self.module)


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("synthetic", "datasets.synthetic", ("4class",), (8, 4, 2), needs_root=False),
        DatasetSpec("isic2017", "datasets.isic2017", ("3class", "melanoma", "sk"), (16, 8, 4), needs_root=True),
        DatasetSpec("isic2018", "datasets.isic2018", ("7class",), (16, 8, 4), needs_root=True),
        DatasetSpec("aptos2019", "datasets.aptos2019", ("5grade",), (32, 16, 8), needs_root=True, ordinal=True),
    )
}


def get_dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; valid names: {', '.join(DATASETS)}") from None


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
    spec = get_dataset_spec(name)
    task = resolve_task(spec, request.task)
    if spec.needs_root and request.root is None:
        raise DatasetError(f"dataset {name!r} needs --data-root pointing at its official layout")
    if request.root is not None and not request.root.is_dir():
        raise DatasetError(f"data root {request.root} is not a directory")
    return spec, dataclasses.replace(request, task=task)
