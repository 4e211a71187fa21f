"""One run: seed, build, pretrain, evaluate and log a single configuration to MLflow."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.checkpoint import save_atomic
from bench.config import REFERENCE_METHODS, RunConfig
from bench.data import load_for_config
from bench.devices import resolve_device
from bench.errors import BenchError
from bench.evaluate import evaluate_knn, evaluate_linear, extract_features
from bench.ledger import Ledger
from bench.seeding import seed_everything
from bench.tracking import Tracker, environment_tags
from bench.trainer import EpochStats, Trainer, TrainingFailed
from datasets import Dataset, get_dataset_spec
from datasets.augment import build_eval_transform, build_views
from methods import build_method
from methods.backbones import Backbone
from methods.base import SSLMethod


@dataclass(frozen=True)
class RunOutcome:
    run_id: str | None
    name: str
    status: str
    metrics: dict[str, float]
    seconds: float
    note: str | None = None


def run_name(config: RunConfig) -> str:
    variant = f"[{config.ablation}]" if config.ablation else ""
    return f"{config.method}{variant}-{config.data.name}-b{config.train.batch_size}-s{config.train.seed}"


def check_fits_data(config: RunConfig) -> None:
    """Checks that need the data: raised before any run of a sweep is created."""
    dataset = load_for_config(config.data)
    if config.method not in REFERENCE_METHODS and config.train.batch_size > len(dataset.train):
        raise BenchError(
            f"batch size {config.train.batch_size} is larger than the {config.data.name} training set "
            f"({len(dataset.train)} images)"
        )


EpochHook = Callable[[int, SSLMethod], None]


class RunPruned(Exception):
    """Raised by an epoch hook to stop a run early on purpose (an Optuna trial that will not win)."""


def execute(
    config: RunConfig,
    tracker: Tracker,
    ledger: Ledger,
    *,
    progress: bool = True,
    force: bool = False,
    epoch_hook: EpochHook | None = None,
    extra_tags: dict[str, str] | None = None,
) -> RunOutcome:
    """Run one configuration to a FINISHED or FAILED MLflow run, unless it is finished already
    (skipped; ``force`` reruns) or running in another process (skipped). An interrupted run with a
    checkpoint is resumed in the same MLflow run. Interrupts mark the run KILLED and propagate."""
    name, config_hash = run_name(config), config.config_hash()
    with ledger.claim(config_hash) as owned:
        if not owned:
            return RunOutcome(None, name, "SKIPPED", {}, 0.0, "running in another process")
        previous = tracker.find_runs(config_hash)
        finished = [r for r in previous if r.info.status == "FINISHED"]
        if finished and not force:
            return RunOutcome(
                finished[0].info.run_id, name, "SKIPPED", finished[0].data.metrics, 0.0, "already finished"
            )
        checkpoint = None if force else ledger.load(config_hash, config.identity())
        interrupted = {r.info.run_id for r in previous if r.info.status in ("RUNNING", "KILLED", "FAILED")}
        if checkpoint is not None and checkpoint["run_id"] in interrupted:
            run_id = checkpoint["run_id"]
            tracker.reopen(run_id)
        else:
            checkpoint = None
            run_id = tracker.start_run(name, config.flat_params(), {**_tags(config), **(extra_tags or {})})
        return _execute_claimed(config, tracker, ledger, run_id, checkpoint, progress, epoch_hook)


def _execute_claimed(
    config: RunConfig,
    tracker: Tracker,
    ledger: Ledger,
    run_id: str,
    checkpoint: dict | None,
    progress: bool,
    epoch_hook: EpochHook | None,
) -> RunOutcome:
    name = run_name(config)
    start = time.perf_counter() - (checkpoint["seconds"] if checkpoint else 0.0)
    try:
        metrics = _pretrain_and_evaluate(config, tracker, ledger, run_id, checkpoint, start, progress, epoch_hook)
    except RunPruned as exc:
        tracker.set_tags(run_id, {"pruned": "true", "failure_reason": f"pruned: {exc}"})
        tracker.finish(run_id, "KILLED")
        ledger.discard(config.config_hash())
        return RunOutcome(run_id, name, "PRUNED", {}, time.perf_counter() - start, str(exc))
    except TrainingFailed as exc:
        tracker.set_tags(run_id, {"failure_reason": str(exc)})
        tracker.finish(run_id, "FAILED")
        ledger.discard(config.config_hash())
        return RunOutcome(run_id, name, "FAILED", {}, time.perf_counter() - start, str(exc))
    except BaseException as exc:
        tracker.set_tags(run_id, {"failure_reason": f"{type(exc).__name__}: {exc}"})
        tracker.finish(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    seconds = time.perf_counter() - start
    tracker.log_metrics(run_id, {"run.seconds": seconds}, step=0)
    tracker.finish(run_id, "FINISHED")
    ledger.discard(config.config_hash())
    note = f"resumed after epoch {checkpoint['epoch'] + 1}" if checkpoint else None
    return RunOutcome(run_id, name, "FINISHED", metrics, seconds, note)


def _tags(config: RunConfig) -> dict[str, str]:
    return {
        **environment_tags(),
        "method": config.method,
        "dataset": config.data.name,
        "task": load_for_config(config.data).task,
        "batch_size": str(config.train.batch_size),
        "seed": str(config.train.seed),
        "config_hash": config.config_hash(),
        "device": str(resolve_device(config.device)),
        "reference": str(config.method in REFERENCE_METHODS).lower(),
        **({"ablation": config.ablation} if config.ablation else {}),
    }


def _pretrain_and_evaluate(
    config: RunConfig,
    tracker: Tracker,
    ledger: Ledger,
    run_id: str,
    checkpoint: dict | None,
    start: float,
    progress: bool,
    epoch_hook: EpochHook | None = None,
) -> dict[str, float]:
    device = resolve_device(config.device)
    dataset = load_for_config(config.data)
    seed_everything(config.train.seed)
    backbone = Backbone(config.model.backbone, config.model.stem)
    if config.method in REFERENCE_METHODS:
        model: torch.nn.Module = backbone.to(device)
        embed = backbone
    else:
        method = build_method(config.method, backbone, config.method_options).to(device)
        trainer = Trainer(
            method,
            dataset.train.images,
            build_views(method.view_recipe, dataset.image_size),
            config.optim,
            epochs=config.train.epochs,
            batch_size=config.train.batch_size,
            seed=config.train.seed,
            device=device,
            progress=progress,
        )
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint["trainer"])

        def on_epoch_end(stats: EpochStats) -> None:
            values = epoch_metrics(stats)
            tracker.log_metrics(run_id, values, stats.epoch)
            state = {
                "trainer": trainer.state_dict(),
                "epoch": stats.epoch,
                "run_id": run_id,
                "config": config.identity(),
                "seconds": time.perf_counter() - start,
            }
            ledger.save(config.config_hash(), state)
            print(
                f"{run_name(config)} epoch {stats.epoch + 1}/{config.train.epochs}: loss {values['train.loss']:.4g}, "
                f"{stats.seconds:.1f} s, {stats.images_per_second:.0f} img/s",
                file=sys.stderr,
                flush=True,
            )
            if epoch_hook is not None:
                epoch_hook(stats.epoch, method)

        trainer.fit(start_epoch=checkpoint["epoch"] + 1 if checkpoint else 0, on_epoch_end=on_epoch_end)
        model, embed = method, method.embed
    model.eval()
    return _evaluate_and_log(config, dataset, model, embed, device, tracker, run_id)


def epoch_metrics(stats: EpochStats) -> dict[str, float]:
    values = {f"train.loss.{name}": value for name, value in stats.losses.items()}
    values["train.loss"] = sum(stats.losses.values())
    values.update(
        {"train.lr": stats.lr, "train.epoch_seconds": stats.seconds, "train.images_per_second": stats.images_per_second}
    )
    return values


def _evaluate_and_log(
    config: RunConfig,
    dataset: Dataset,
    model: torch.nn.Module,
    embed,
    device: torch.device,
    tracker: Tracker,
    run_id: str,
) -> dict[str, float]:
    features = extract_features(
        embed, dataset, build_eval_transform(dataset.image_size), device, config.eval.batch_size
    )
    common = {"class_names": dataset.class_names, "ordinal": get_dataset_spec(dataset.name).ordinal}
    protocols = {
        "knn": lambda: evaluate_knn(
            features, dataset.num_classes, config.eval.knn_k, config.eval.knn_temperature, **common
        ),
        "linear": lambda: evaluate_linear(features, dataset.num_classes, config.train.seed, **common),
    }
    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in config.eval.protocols:
            result = protocols[name]()
            metrics.update({f"{name}.{key}": value for key, value in result.metrics.items()})
            report = {"protocol": name, "selection": result.selection, **result.test_report}
            (folder / f"{name}_test_report.json").write_text(json.dumps(report, indent=2))
        (folder / "config.json").write_text(json.dumps(config.to_dict(), indent=2, default=list))
        (folder / "split.json").write_text(json.dumps(dataset.split_record, indent=2, default=list))
        save_atomic({"config": config.to_dict(), "model": model.state_dict()}, folder / "model.pt")
        tracker.log_metrics(run_id, metrics, step=config.train.epochs)
        for path in sorted(folder.iterdir()):
            tracker.log_artifact(run_id, path)
    return metrics
