"""What a caller asks a dataset reader for; typed so readers and the harness agree on one shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DataRequest:
    """Everything a reader needs to produce a ``Dataset``.

    ``split_seed`` drives seeded splits (ISIC 2018 without official val/test, APTOS 2019) and the
    synthetic generator. ``synthetic_sizes`` (train, val, test) is read by the synthetic dataset only.
    """

    image_size: int
    root: Path | None = None
    task: str | None = None
    split_seed: int = 0
    cache_dir: Path | None = None
    synthetic_sizes: tuple[int, int, int] = (1024, 256, 256)
