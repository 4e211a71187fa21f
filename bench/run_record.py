"""What a run records about itself besides its metrics: its params (as resolved), its tags and the data
it used, as MLflow dataset inputs (the UI's Dataset column)."""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

import numpy as np

from bench.data import load_for_config
from bench.devices import resolve_device
from bench.references import REFERENCES
from bench.schema import DataConfig, RunConfig
from bench.tracking import DatasetRecord, environment_tags
from datasets import Dataset
from datasets.base import ImageSplit
from methods import get_method

# MLflow's contexts for what a run did with each split: trained on it, selected on it (the linear probe's
# C, the fine-tune's epoch), scored once on it.
CONTEXTS = {"train": "training", "val": "validation", "test": "testing"}
DIGEST_CHARS = 16  # MLflow's own digests are 8-10 characters; its SQL stores hold up to 36
_CHUNK = 64 << 20  # bytes hashed at a time, so a memory-mapped split is never copied whole


def run_params(config: RunConfig) -> dict[str, str]:
    """The params of the run: the config's (only what affects the run), with what was resolved only when
    it ran: the dataset's task where the config left it to the dataset, and the device ``auto`` chose;
    a subset limit that cut nothing (the smoke preset's 256 on a smaller set) is left out."""
    dataset = load_for_config(config.data)
    params = {**config.flat_params(), "data.task": dataset.task, "device": str(resolve_device(config.device))}
    sizes = dataset.split_record.get("subset", {}).get("sizes", {})
    for limit, splits in (("data.train_limit", ("train",)), ("data.eval_limit", ("val", "test"))):
        if sizes and all(sizes[split]["used"] == sizes[split]["of"] for split in splits):
            params.pop(limit, None)
    return params


def run_tags(config: RunConfig) -> dict[str, str]:
    return {
        **environment_tags(),
        "method": config.method,
        "dataset": config.data.name,
        "task": load_for_config(config.data).task,
        "batch_size": str(config.train.batch_size),
        "seed": str(config.train.seed),
        "config_hash": config.config_hash(),
        "device": str(resolve_device(config.device)),
        "reference": str(config.method in REFERENCES).lower(),
        **method_tags(config.method),
        **({"ablation": config.ablation} if config.ablation else {}),
        **(
            {"weights": Path(config.model.weights).name, "weights_sha256": config.model.weights_sha256}
            if config.model.weights
            else {}
        ),
    }


def method_tags(method: str) -> dict[str, str]:
    """How reports name, order and pair the arm (reports read MLflow only, never the method registry)."""
    if method in REFERENCES:
        return {"method_display": REFERENCES[method].display_name, "method_order": "1000", "method_baseline": "false"}
    cls = get_method(method)
    return {
        "method_display": cls.display_name,
        "method_order": str(cls.report_order),
        "method_baseline": str(cls.report_baseline).lower(),
    }


@functools.lru_cache(maxsize=4)
def dataset_records(data: DataConfig) -> tuple[DatasetRecord, ...]:
    """The run's splits as MLflow dataset inputs, named ``<dataset>/<task>``. The digest hashes what the
    run saw: the class names, and each image's id, label and decoded pixels at the run's resolution (a
    changed file, label, subset or size gives another digest). Once per process and data config: a
    sweep's runs on the same data share the records (hashing ISIC 2017 at 64 px takes tens of ms)."""
    dataset = load_for_config(data)
    source_type, source = _source(data, dataset)
    return tuple(
        DatasetRecord(
            name=f"{dataset.name}/{dataset.task}",
            digest=split_digest(dataset, split),
            source_type=source_type,
            source=source,
            context=CONTEXTS[name],
            profile=json.dumps(
                {"images": len(split), "classes": dataset.num_classes, "image_size": dataset.image_size}
            ),
        )
        for name, split in dataset.splits().items()
    )


def split_digest(dataset: Dataset, split: ImageSplit) -> str:
    digest = hashlib.sha256(json.dumps([dataset.name, dataset.task, list(dataset.class_names)]).encode())
    digest.update("\n".join(split.ids).encode())
    digest.update(np.ascontiguousarray(split.labels, dtype=np.int64).tobytes())
    pixels = split.images.reshape(len(split), -1)
    rows = max(1, _CHUNK // max(1, pixels.shape[1]))
    for start in range(0, len(split), rows):
        digest.update(np.ascontiguousarray(pixels[start : start + rows]).data)
    return digest.hexdigest()[:DIGEST_CHARS]


def _source(data: DataConfig, dataset: Dataset) -> tuple[str, str]:
    """Files under a data root: a ``local`` source (the UI shows the path); a generated set: a ``code``
    source naming the generator, its seed and split sizes."""
    record = dataset.split_record
    if data.root is not None and record.get("kind") != "synthetic":
        return "local", json.dumps({"uri": str(Path(data.root).expanduser().resolve())})
    sizes = "/".join(str(n) for n in record.get("sizes", {}).values())
    generator = f"{dataset.name}(seed={record.get('seed', data.split_seed)}, sizes={sizes})"
    return "code", json.dumps({"tags": {"generator": generator}})
