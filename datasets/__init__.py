"""Dataset readers, the synthetic default, decoded cache and batched augmentation.

Note: inside this project's environment this top-level package shadows HuggingFace ``datasets``.
"""

from datasets.base import Dataset, DatasetError, ImageSplit
from datasets.registry import DATASETS, check_dataset, get_dataset_spec, load_dataset
from datasets.request import DataRequest

__all__ = [
    "DATASETS",
    "check_dataset",
    "DataRequest",
    "Dataset",
    "DatasetError",
    "ImageSplit",
    "get_dataset_spec",
    "load_dataset",
]
