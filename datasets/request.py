"""What a caller asks a dataset reader for; typed so readers and the harness agree on one shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from datasets.base import DatasetError


@dataclass(frozen=True)
class DataRequest:
    """Everything a reader needs to produce a ``Dataset``.

    ``split_seed`` drives seeded splits (ISIC 2018 without official val/test, APTOS 2019), the
    synthetic generator and the subsets below. ``synthetic_sizes`` (train, val, test) is read by the
    synthetic dataset only.

    ``train_limit`` / ``eval_limit`` cap the training set / the validation and test sets for quick runs:
    each split becomes a seeded stratified subset of itself (``datasets.splits.stratified_subset``),
    only its images are decoded, and ``Dataset.split_record["subset"]`` says so. None keeps a split whole.
    """

    image_size: int
    root: Path | None = None
    task: str | None = None
    split_seed: int = 0
    cache_dir: Path | None = None
    synthetic_sizes: tuple[int, int, int] = (1024, 256, 256)
    train_limit: int | None = None
    eval_limit: int | None = None

    def __post_init__(self) -> None:
        for name in ("train_limit", "eval_limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise DatasetError(f"{name} must be a whole number of images >= 1 (or None for all), got {value!r}")

    def limit_for(self, split: str) -> int | None:
        """The cap on ``split``: ``train_limit`` for training, ``eval_limit`` for val and test."""
        return self.train_limit if split == "train" else self.eval_limit

    @property
    def limited(self) -> bool:
        return self.train_limit is not None or self.eval_limit is not None

    def subset_record(self, sizes: dict[str, tuple[int, int]]) -> dict:
        """How the subset was drawn and each split's ``(used, full)`` size, for ``split_record["subset"]``."""
        return {
            "method": "seeded stratified subset",
            "seed": self.split_seed,
            "train_limit": self.train_limit,
            "eval_limit": self.eval_limit,
            "sizes": {split: {"used": used, "of": full} for split, (used, full) in sizes.items()},
        }
