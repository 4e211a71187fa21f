"""After training: every evaluation protocol a run selected, its metrics and artifacts logged to MLflow."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import torch

from bench.checkpoint import save_atomic
from bench.evaluate import evaluate_knn, evaluate_linear, extract_features
from bench.finetune import EpochReport, finetune
from bench.metrics import trivial_baselines
from bench.progress import EpochClock, loss_metrics, time_left
from bench.references import Prepared
from bench.schema import RunConfig
from bench.tracking import Tracker
from bench.variance import variance_shares
from datasets import Dataset, get_dataset_spec
from datasets.augment import build_eval_transform


def evaluate_and_log(
    config: RunConfig,
    name: str,
    dataset: Dataset,
    prepared: Prepared,
    device: torch.device,
    tracker: Tracker,
    run_id: str,
    progress: bool = True,
) -> dict[str, float]:
    """Every selected protocol; kNN and the linear probe share one pass of frozen features, the
    fine-tune works on a copy (``model.pt`` is the pretrained model either way). ``name`` labels the
    progress lines."""
    features = None
    metrics: dict[str, float] = {}
    for split in ("val", "test"):  # what scores are worth: they mean something only above these
        metrics.update(trivial_baselines(getattr(dataset, split).labels, dataset.num_classes, split))
    if {"knn", "linear"} & set(config.eval.protocols):
        features = extract_features(
            prepared.embed, dataset, build_eval_transform(dataset.image_size), device, config.eval.batch_size
        )
        shares = variance_shares(*features.test, dataset.test.factors)
        metrics.update({f"variance_share.test.{name}": value for name, value in shares.items()})
    common = {"class_names": dataset.class_names, "ordinal": get_dataset_spec(dataset.name).ordinal}
    clock = EpochClock(config.eval.finetune_epochs)

    def on_finetune_epoch(report: EpochReport, _model: torch.nn.Module) -> None:
        stats = report.stats
        values = loss_metrics("finetune.train.loss", stats.losses)  # per step only for the progressive (PMG) one
        values["finetune.epoch_val.balanced_accuracy"] = report.val_balanced_accuracy
        tracker.log_metrics(run_id, values, stats.epoch)
        print(
            f"{name} finetune epoch {stats.epoch + 1}/{config.eval.finetune_epochs}: "
            f"loss {values['finetune.train.loss']:.4g}, val balanced accuracy {report.val_balanced_accuracy:.3f}, "
            f"{stats.seconds:.1f} s{time_left(clock.left(stats.epoch, stats.seconds), 'fine-tuning')}",
            file=sys.stderr,
            flush=True,
        )

    protocols = {
        "knn": lambda: evaluate_knn(
            features, dataset.num_classes, config.eval.knn_k, config.eval.knn_temperature, **common
        ),
        "linear": lambda: evaluate_linear(features, dataset.num_classes, config.train.seed, **common),
        "finetune": lambda: finetune(
            prepared.pretrained,
            dataset,
            config.eval,
            config.train.seed,
            device,
            progress=progress,
            on_epoch_end=on_finetune_epoch,
            **common,
        ),
    }
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for protocol in config.eval.protocols:
            result = protocols[protocol]()
            metrics.update({f"{protocol}.{key}": value for key, value in result.metrics.items()})
            report = {"protocol": protocol, "selection": result.selection, **result.test_report}
            (folder / f"{protocol}_test_report.json").write_text(json.dumps(report, indent=2))
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))
        (folder / "split.json").write_text(json.dumps(dataset.split_record, indent=2, default=list))
        save_atomic({"config": config.to_dict(), "model": prepared.model.state_dict()}, folder / "model.pt")
        tracker.log_metrics(run_id, metrics, step=config.train.epochs)
        for path in sorted(folder.iterdir()):
            tracker.log_artifact(run_id, path)
    return metrics
