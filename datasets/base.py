"""The data model every reader returns: decoded uint8 images per split, labels and provenance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


class DatasetError(ValueError):
    """A problem with the user's data, phrased so that it names the file or row to fix."""


@dataclass(frozen=True)
class ImageSplit:
    """One split, decoded once: ``images`` is uint8 ``[N, 3, H, W]`` (an array or a read-only memmap).

    ``factors``: per-image values of how each image was made, known only for generated data; they let
    an evaluation ask what else than the class a representation encodes (``bench.variance``).
    """

    images: np.ndarray
    labels: np.ndarray
    ids: tuple[str, ...]
    factors: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 [N, 3, H, W], got {self.images.dtype} {self.images.shape}")
        if len(self.images) != len(self.labels) or len(self.labels) != len(self.ids):
            raise ValueError(
                f"images ({len(self.images)}), labels ({len(self.labels)}) and ids ({len(self.ids)}) differ in length"
            )
        wrong = sorted(name for name, values in self.factors.items() if np.shape(values) != (len(self.labels),))
        if wrong:
            raise ValueError(f"factor(s) {', '.join(wrong)} need one value per image ({len(self.labels)})")

    def __len__(self) -> int:
        return len(self.labels)

    def class_counts(self, num_classes: int) -> list[int]:
        return np.bincount(self.labels, minlength=num_classes).tolist()


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset with fixed train/val/test splits at one resolution.

    ``split_record`` says how the splits were made (official, or seeded and carved out of training),
    so a run can store it as an artifact and a reader of the results can check for leaks.
    """

    name: str
    task: str
    class_names: tuple[str, ...]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    split_record: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    def splits(self) -> dict[str, ImageSplit]:
        return {"train": self.train, "val": self.val, "test": self.test}
