"""The bridge from a run's ``DataConfig`` to a loaded ``Dataset`` (memoised within one process)."""

from __future__ import annotations

import functools
from pathlib import Path

from bench.errors import BenchError
from bench.schema import DataConfig
from datasets import DataRequest, Dataset, DatasetError, load_dataset


def data_request(config: DataConfig) -> DataRequest:
    return DataRequest(
        image_size=config.image_size,
        root=Path(config.root).expanduser() if config.root else None,
        task=config.task,
        split_seed=config.split_seed,
        cache_dir=Path(config.cache_dir).expanduser() if config.cache_dir else None,
        synthetic_sizes=tuple(config.synthetic_sizes),
        train_limit=config.train_limit,
        eval_limit=config.eval_limit,
    )


@functools.lru_cache(maxsize=4)
def load_for_config(config: DataConfig) -> Dataset:
    """Load once per process: a sweep over methods, batch sizes and seeds reuses the decoded arrays."""
    try:
        return load_dataset(config.name, data_request(config))
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
