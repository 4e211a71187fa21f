"""What a reader found before touching pixels: labelled ids and image paths per split, plus problems.

Keeping this step free of image I/O lets split logic be tested on label files alone, and lets the
shared checker (``datasets.check``) treat all three datasets the same way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from datasets.layout import require_layout
from datasets.registry import get_dataset_spec, resolve_task
from datasets.request import DataRequest
from datasets.splits import stratified_split, stratified_subset


@dataclass(frozen=True)
class SplitPlan:
    """One split's ids and labels; image ``i`` is ``image_dir / (ids[i] + suffix)``."""

    ids: tuple[str, ...]
    labels: tuple[int, ...]
    image_dir: Path
    suffix: str
    source: str  # where the rows came from, for messages

    @classmethod
    def of(cls, labelled: Sequence[tuple[str, int]], image_dir: Path, suffix: str, source: str) -> SplitPlan:
        return cls(tuple(i for i, _ in labelled), tuple(y for _, y in labelled), image_dir, suffix, source)

    @property
    def paths(self) -> list[Path]:
        return [self.image_dir / f"{image_id}{self.suffix}" for image_id in self.ids]

    def select(self, indices: Sequence[int]) -> SplitPlan:
        """The rows at ``indices``, same folder and source."""
        return dataclasses.replace(
            self, ids=tuple(self.ids[i] for i in indices), labels=tuple(self.labels[i] for i in indices)
        )


@dataclass(frozen=True)
class DatasetPlan:
    """A dataset's splits as read from its label files, with every problem found so far."""

    name: str
    task: str
    class_names: tuple[str, ...]
    splits: dict[str, SplitPlan]
    problems: list[str] = field(default_factory=list)
    split_record: dict = field(default_factory=dict)


def resolve_request(name: str, request: DataRequest) -> tuple[Path, str]:
    """The data root and the task (default when unset); raises, naming the remedy, for a root that does
    not hold the dataset (``datasets.layout``)."""
    spec = get_dataset_spec(name)
    task = resolve_task(spec, request.task)
    return require_layout(spec, request.root), task


def limit_plan(plan: DatasetPlan, request: DataRequest) -> DatasetPlan:
    """``plan`` with each split cut to the request's seeded stratified subset (``DataRequest.train_limit``,
    ``eval_limit``) and the subset added to its split record; unchanged without limits."""
    if not request.limited:
        return plan
    chosen = {
        name: split.select(stratified_subset(split.labels, request.limit_for(name), request.split_seed))
        for name, split in plan.splits.items()
    }
    sizes = {name: (len(chosen[name].ids), len(split.ids)) for name, split in plan.splits.items()}
    record = {**plan.split_record, "subset": request.subset_record(sizes)}
    return dataclasses.replace(plan, splits=chosen, split_record=record)


def carve_splits(
    labelled: Sequence[tuple[str, int]],
    fractions: Mapping[str, float],
    seed: int,
    image_dir: Path,
    suffix: str,
    source: str,
    groups: Sequence[str] | None = None,
) -> dict[str, SplitPlan]:
    """Seeded stratified (optionally grouped) splits of one labelled list, as ``SplitPlan``s."""
    indices = stratified_split([label for _, label in labelled], fractions, seed, groups)
    described = f"{source} (seeded split, seed {seed})"
    return {
        name: SplitPlan.of([labelled[i] for i in index], image_dir, suffix, described)
        for name, index in indices.items()
    }
