"""Checking a dataset end to end and reporting every problem at once, each naming its file or row.

The same pass builds the decoded cache, so ``check`` followed by ``load`` decodes each image once,
and a split with a valid cache is known to decode without reading its images again.

Warnings (a rebuilt cache, degenerate images) are reported but do not fail the check: the data can
still be used, but the user should know.

With a subset requested (``DataRequest.train_limit``/``eval_limit``) the cheap checks (labels, leaks,
missing files) still cover every split in full, so a quick run does not hide a broken dataset, but only
the chosen images are decoded (and cached on their own): that is what makes a quick run quick.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from datasets.cache import DecodeFailures, cached_split
from datasets.decode import decode_all
from datasets.layout import incomplete_layout
from datasets.plan import DatasetPlan, SplitPlan, limit_plan
from datasets.registry import get_dataset_spec
from datasets.request import DataRequest

# How many ids a message lists before summarising the rest.
SHOWN_IDS = 5
# Below this side an image holds too few pixels to resize into anything but a blur or a flat colour.
MIN_SIDE_PX = 16
# Above this ratio of long to short side the centre crop keeps less than a quarter of the image.
MAX_ASPECT_RATIO = 4.0


@dataclass
class CheckReport:
    """Split sizes and class counts of what was read, and every problem found.

    ``subset``: how the splits were cut for a quick run, shown beside the dataset's name; ``remedy``: what
    to do about files missing from the layout, shown after the problems.
    """

    dataset: str
    task: str
    class_names: tuple[str, ...]
    class_counts: dict[str, list[int]]
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    subset: str | None = None
    remedy: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def sizes(self) -> dict[str, int]:
        return {split: sum(counts) for split, counts in self.class_counts.items()}

    def format(self) -> str:
        """A table of split sizes and class counts, then the problems (or that there are none)."""
        header = ["split", "total", *self.class_names]
        table = [header] + [[split, str(sum(counts)), *map(str, counts)] for split, counts in self.class_counts.items()]
        widths = [max(len(row[col]) for row in table) for col in range(len(header))]
        lines = [f"{self.dataset} (task {self.task}{'; ' + self.subset if self.subset else ''})"]
        for row in table:
            cells = [cell.rjust(width) for cell, width in zip(row, widths, strict=True)]
            cells[0] = row[0].ljust(widths[0])
            lines.append("  ".join(cells).rstrip())
        if self.ok:
            lines.append("no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"- {problem}" for problem in self.problems)
            if self.remedy:
                lines.append(f"to fix: {self.remedy}")
        if self.warnings:
            lines.append(f"{len(self.warnings)} warning(s):")
            lines.extend(f"- {warning}" for warning in self.warnings)
        return "\n".join(lines)


def check_and_decode(plan: DatasetPlan, request: DataRequest) -> tuple[CheckReport, DatasetPlan, dict[str, np.ndarray]]:
    """Check ``plan``'s files and images; returns the report, the plan of the images used (the
    request's subset, see the module docstring) and the decoded images of its sound splits."""
    chosen = limit_plan(plan, request)
    problems = list(plan.problems) + _shared_ids(plan)
    warnings: list[str] = []
    images = {}
    for name, split in plan.splits.items():
        if not split.ids:
            problems.append(f"split {name!r} is empty (no labelled rows from {split.source})")
            continue
        used = chosen.splits[name]
        missing = _missing_ids(split)
        if missing:
            problems.append(_missing_message(name, split, missing))
            present = [path for path in used.paths if path.is_file()]
            failures = decode_all(present, request.image_size, desc=f"checking {plan.name} {name}") if present else []
        else:
            try:
                cached = cached_split(plan.name, name, used.paths, request.image_size, request.cache_dir)
                images[name] = cached.images
                if cached.rebuilt:
                    warnings.append(cached.rebuilt)
                warnings.extend(odd_shapes(name, used, cached.sizes))
                failures = []
            except DecodeFailures as error:
                failures = error.failures
        problems.extend(f"unreadable or truncated image {failure}" for failure in failures)
    counts = {
        name: np.bincount(np.asarray(split.labels, dtype=np.int64), minlength=len(plan.class_names)).tolist()
        for name, split in chosen.splits.items()
    }
    report = CheckReport(plan.name, plan.task, plan.class_names, counts, problems, warnings)
    if "subset" in chosen.split_record:
        report.subset = describe_subset(chosen.split_record["subset"])
    if problems and request.root is not None:
        report.remedy = incomplete_layout(get_dataset_spec(plan.name), request.root)
    return report, chosen, images


def describe_subset(record: dict) -> str:
    """``seeded stratified subset (seed 0): train 256 of 2000, ...`` from ``split_record["subset"]``."""
    sizes = ", ".join(f"{split} {size['used']} of {size['of']}" for split, size in record["sizes"].items())
    return f"{record['method']} (seed {record['seed']}): {sizes}"


def odd_shapes(name: str, split: SplitPlan, sizes: np.ndarray) -> list[str]:
    """One warning per kind of degenerate image in the split (``sizes``: ``[N, 2]`` width, height)."""
    short, long = sizes.min(axis=1), sizes.max(axis=1)
    kinds = (
        (short < MIN_SIDE_PX, f"a side below {MIN_SIDE_PX} px (almost nothing to resize)"),
        (long > MAX_ASPECT_RATIO * short, f"an aspect ratio above {MAX_ASPECT_RATIO:g}:1 (the centre crop drops most)"),
    )
    found = []
    for flagged, what in kinds:
        named = [f"{split.ids[i]}{split.suffix} ({sizes[i, 0]}x{sizes[i, 1]})" for i in np.flatnonzero(flagged)]
        if named:
            found.append(f"split {name!r}: {len(named)} image(s) in {split.image_dir} with {what}: {some_ids(named)}")
    return found


def _missing_ids(split: SplitPlan) -> list[str]:
    try:
        present = set(os.listdir(split.image_dir))
    except OSError:
        present = set()
    return [image_id for image_id in split.ids if f"{image_id}{split.suffix}" not in present]


def _missing_message(name: str, split: SplitPlan, missing: list[str]) -> str:
    where = split.image_dir if split.image_dir.is_dir() else f"{split.image_dir} (folder not found)"
    return (
        f"split {name!r}: {len(missing)} of {len(split.ids)} image files listed in {split.source} are missing "
        f"from {where}: {some_ids(missing)}"
    )


def _shared_ids(plan: DatasetPlan) -> list[str]:
    """Ids in more than one split: the same image on both sides of an evaluation is a leak."""
    problems = []
    names = list(plan.splits)
    for position, first in enumerate(names):
        for second in names[position + 1 :]:
            shared = sorted(set(plan.splits[first].ids) & set(plan.splits[second].ids))
            if shared:
                problems.append(f"{len(shared)} duplicate id(s) in both {first!r} and {second!r}: {some_ids(shared)}")
    return problems


def some_ids(ids: list[str]) -> str:
    """The first few ids, then how many more: enough to find the rows without flooding the screen."""
    more = len(ids) - SHOWN_IDS
    return ", ".join(ids[:SHOWN_IDS]) + (f" and {more} more" if more > 0 else "")
