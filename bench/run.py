"""One run: seed, build, pretrain, evaluate and log a single configuration to MLflow."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from mlflow.entities import Run

from bench.data import load_for_config
from bench.devices import place, resolve_device
from bench.errors import BenchError
from bench.ledger import DISK_FULL, CheckpointNotWritten, Ledger, write_failure
from bench.process_group import DistributedContext, broadcast_from_main, follow, on_main_then_agree
from bench.progress import EpochClock, epoch_line, epoch_metrics, without_single_step
from bench.references import REFERENCES, Prepared
from bench.run_record import dataset_records, run_params, run_tags
from bench.schema import RunConfig
from bench.scoring import evaluate_and_log
from bench.seeding import seed_everything
from bench.tracking import Tracker, TrackingUnavailable
from bench.trainer import EpochStats, Trainer, TrainingFailed
from bench.weights import build_backbone, check_weights
from datasets import Dataset
from datasets.augment import build_views
from methods import build_method
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
    """Checks that need the data (or the weights file): raised before any run of a sweep is created."""
    dataset = load_for_config(config.data)
    trains = config.method not in REFERENCES or REFERENCES[config.method].trains
    if trains and config.train.batch_size > len(dataset.train):
        raise BenchError(
            f"batch size {config.train.batch_size} is larger than the {config.data.name} training set "
            f"({len(dataset.train)} images)"
        )
    if "finetune" in config.eval.protocols and config.eval.finetune_batch_size > len(dataset.train):
        raise BenchError(
            f"eval.finetune_batch_size {config.eval.finetune_batch_size} is larger than the {config.data.name} "
            f"training set ({len(dataset.train)} images)"
        )
    if config.model.weights is not None:
        check_weights(config.model.weights, config.model.backbone, config.model.weights_sha256)


RUNNING_ELSEWHERE = "running in another process"
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
    wait: bool = False,
    ctx: DistributedContext | None = None,
) -> RunOutcome:
    """Run one configuration to a FINISHED or FAILED MLflow run, unless it is finished already
    (skipped; ``force`` reruns) or running in another process (skipped). An interrupted run with a
    checkpoint is resumed in the same MLflow run; one without (killed before its first checkpoint, or
    its checkpoint unreadable) starts over in the same MLflow run. Interrupts mark the run KILLED and
    propagate. With ``wait``, a configuration held by another process is waited for instead of skipped.
    The run is logged to ``tracker``'s experiment, or to its dataset's when the tracker names none."""
    tracker = tracker.for_dataset(config.data.name)
    name, config_hash = run_name(config), config.config_hash()
    with ledger.claim(config_hash, wait=wait) as owned:
        if not owned:
            return RunOutcome(None, name, "SKIPPED", {}, 0.0, RUNNING_ELSEWHERE)
        previous = tracker.find_runs(config_hash)
        finished = [r for r in previous if r.info.status == "FINISHED"]
        if finished and not force:
            return RunOutcome(
                finished[0].info.run_id, name, "SKIPPED", finished[0].data.metrics, 0.0, "already finished"
            )
        checkpoint = None if force else ledger.load(config_hash, config.identity())
        interrupted = {r.info.run_id for r in previous if r.info.status in ("RUNNING", "KILLED", "FAILED")}
        note = None
        if checkpoint is not None and checkpoint["run_id"] in interrupted:
            run_id = checkpoint["run_id"]
            tracker.reopen(run_id)
        else:
            checkpoint = None
            together = ctx is not None and ctx.enabled and config.method not in REFERENCES
            world = {"world_size": str(ctx.world_size)} if together else {}
            tags = {**run_tags(config), **world, **(extra_tags or {})}
            stranded = _stranded(previous)
            if stranded is None:
                run_id = tracker.start_run(name, run_params(config), tags)
            else:
                run_id, note = stranded, "restarted from epoch 0 in its interrupted run (no usable checkpoint)"
                tracker.restart(run_id, run_params(config), tags)
                print(f"bench: {name}: {note}", file=sys.stderr, flush=True)
        tracker.log_datasets(run_id, list(dataset_records(config.data)))  # a run logged earlier lacks them
        return _execute_claimed(config, tracker, ledger, run_id, checkpoint, progress, epoch_hook, ctx, note)


def _stranded(runs: list[Run]) -> str | None:
    """The newest run of a configuration left RUNNING (its process was killed) or KILLED without a
    checkpoint to resume from: it is started over rather than left beside a second run, so reports
    see one run per configuration. Pruned trials ended on purpose and FAILED runs keep their record."""
    for run in runs:
        if run.info.status in ("RUNNING", "KILLED") and run.data.tags.get("pruned") != "true":
            return run.info.run_id
    return None


def _execute_claimed(
    config: RunConfig,
    tracker: Tracker,
    ledger: Ledger,
    run_id: str,
    checkpoint: dict | None,
    progress: bool,
    epoch_hook: EpochHook | None,
    ctx: DistributedContext | None = None,
    note: str | None = None,
) -> RunOutcome:
    name = run_name(config)
    start = time.perf_counter() - (checkpoint["seconds"] if checkpoint else 0.0)
    try:
        with _torch_threads(checkpoint.get("threads") if checkpoint else None, name):
            metrics = _pretrain_and_evaluate(
                config, tracker, ledger, run_id, checkpoint, start, progress, epoch_hook, ctx
            )
    except RunPruned as exc:
        tracker.set_tags(run_id, {"pruned": "true", "failure_reason": f"pruned: {exc}"})
        tracker.finish(run_id, "KILLED")
        ledger.discard(config.config_hash())
        return RunOutcome(run_id, name, "PRUNED", {}, time.perf_counter() - start, str(exc))
    except TrackingUnavailable:
        raise  # the store cannot take a failure tag either; the checkpoint stays for the resume
    except Exception as exc:
        if isinstance(exc, CheckpointNotWritten) or (isinstance(exc, OSError) and exc.errno in DISK_FULL):
            # Every later run would fail alike: stop the sweep, keep the last checkpoint for the resume.
            message = write_failure(exc)
            _mark_interrupted(tracker, run_id, message)
            raise BenchError(f"{name}: {message}") from None
        reason = failure_reason(exc)
        tracker.set_tags(run_id, {"failure_reason": reason})
        tracker.finish(run_id, "FAILED")
        ledger.discard(config.config_hash())
        print(f"bench: {name} FAILED: {reason}", file=sys.stderr, flush=True)
        return RunOutcome(run_id, name, "FAILED", {}, time.perf_counter() - start, reason)
    except BaseException as exc:  # Ctrl-C, SIGTERM: the sweep stops, the run stays resumable
        _mark_interrupted(tracker, run_id, f"interrupted ({str(exc) or type(exc).__name__})")
        raise
    seconds = time.perf_counter() - start
    tracker.log_metrics(run_id, {"run.seconds": seconds}, step=0)
    tracker.finish(run_id, "FINISHED")
    ledger.discard(config.config_hash())
    if checkpoint:
        note = f"resumed after epoch {checkpoint['epoch'] + 1}"
    return RunOutcome(run_id, name, "FINISHED", metrics, seconds, note)


def failure_reason(exc: Exception) -> str:
    """The ``failure_reason`` of a run that failed: the message of an expected failure (NaN loss,
    collapse); for any other error also its type and the line that raised it, so that it can be
    traced from the store alone. Bounded: MLflow tags hold a few thousand characters."""
    if isinstance(exc, TrainingFailed):
        return str(exc)[:1000]
    where = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{type(exc).__name__}: {str(exc)[:900]} ({Path(where.filename).name}:{where.lineno})"


@contextlib.contextmanager
def _torch_threads(recorded: int | None, name: str) -> Iterator[None]:
    """A run resumes at the torch thread count it started with (its checkpoint records it): CPU results
    repeat bit for bit only at one count, and a rerun under other ``--workers`` or OMP_NUM_THREADS
    would otherwise finish the run at another."""
    current = torch.get_num_threads()
    if recorded is not None and recorded != current:
        print(
            f"bench: {name}: resuming with {recorded} torch thread(s) as it started (this process has {current})",
            file=sys.stderr,
            flush=True,
        )
        torch.set_num_threads(recorded)
    try:
        yield
    finally:
        torch.set_num_threads(current)


def _mark_interrupted(tracker: Tracker, run_id: str, reason: str) -> None:
    """KILLED with the reason, as far as the store still accepts writes: the run stays resumable."""
    try:
        tracker.set_tags(run_id, {"failure_reason": reason})
        tracker.finish(run_id, "KILLED")
    except TrackingUnavailable:
        pass


def _pretrain_and_evaluate(
    config: RunConfig,
    tracker: Tracker,
    ledger: Ledger,
    run_id: str,
    checkpoint: dict | None,
    start: float,
    progress: bool,
    epoch_hook: EpochHook | None = None,
    ctx: DistributedContext | None = None,
) -> dict[str, float]:
    together = ctx is not None and ctx.enabled and config.method not in REFERENCES
    device = ctx.device if together else resolve_device(config.device)
    dataset = load_for_config(config.data)
    seed_everything(config.train.seed)
    m = config.model
    backbone = build_backbone(m.backbone, m.stem, m.weights, m.weights_sha256)
    if config.method in REFERENCES:
        prepared = REFERENCES[config.method].build(config, dataset, backbone, device, progress)
    else:
        if together:  # the other ranks build the same trainer and train with this one
            resume = (checkpoint["trainer"], checkpoint["epoch"] + 1) if checkpoint else (None, 0)
            broadcast_from_main(TrainOrder(config, *resume), ctx)
        trainer = build_ssl_trainer(config, dataset, backbone, device, progress, ctx if together else None)
        prepared = Prepared(trainer.method, trainer.method.embed, trainer.method, trainer)
    model, trainer = prepared.model, prepared.trainer
    if trainer is not None:
        if checkpoint is not None:
            trainer.load_state_dict(checkpoint["trainer"])
            _relog_last_epoch(tracker, run_id, checkpoint)

        clock = EpochClock(config.train.epochs)

        def on_epoch_end(stats: EpochStats) -> None:
            values = epoch_metrics(stats)
            state = {
                "trainer": trainer.state_dict(),
                "epoch": stats.epoch,
                "epoch_metrics": values,
                "run_id": run_id,
                "config": config.identity(),
                "seconds": time.perf_counter() - start,
                "threads": torch.get_num_threads(),
            }
            # Checkpoint first: if the store is down, this epoch is kept and its metrics re-logged on resume.
            ledger.save(config.config_hash(), state)
            tracker.log_metrics(run_id, values, stats.epoch)
            left = clock.left(stats.epoch, stats.seconds)
            line = epoch_line(run_name(config), stats, config.train.epochs, values["train.loss"], left)
            print(line, file=sys.stderr, flush=True)
            check_collapse(stats, config.train.collapse_threshold)
            if epoch_hook is not None:
                epoch_hook(stats.epoch, model)

        # Under torchrun rank 0 logs and checkpoints, then tells the other ranks whether to go on.
        agreed = on_main_then_agree(ctx, on_epoch_end) if together else on_epoch_end
        trainer.fit(start_epoch=checkpoint["epoch"] + 1 if checkpoint else 0, on_epoch_end=agreed)
    model.eval()
    return evaluate_and_log(config, run_name(config), dataset, prepared, device, tracker, run_id, progress)


@dataclass(frozen=True)
class TrainOrder:
    """What rank 0 sends the other ranks before it trains a configuration together with them: the
    configuration and the trainer state it resumes from at ``start_epoch`` (None: from scratch)."""

    config: RunConfig
    state: dict | None
    start_epoch: int


def build_ssl_trainer(
    config: RunConfig,
    dataset: Dataset,
    backbone: torch.nn.Module,
    device: torch.device,
    progress: bool,
    ctx: DistributedContext | None,
) -> Trainer:
    """The SSL method's Trainer, built the same way on every rank (after the same seeding)."""
    method = place(build_method(config.method, backbone, config.method_options), device)
    return Trainer(
        method,
        dataset.train.images,
        build_views(method.view_recipe, dataset.image_size, **dataclasses.asdict(config.views)),
        config.optim,
        epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        seed=config.train.seed,
        device=device,
        progress=progress,
        compile=config.train.compile,
        sync_batchnorm=config.train.sync_batchnorm,
        distributed=ctx,
    )


def follow_rank_zero(ctx: DistributedContext) -> int:
    """The whole life of a rank other than 0 under ``bench run --nproc``: train each configuration rank 0
    trains together with it, from the state rank 0 sends, until rank 0 ends the sweep. Nothing is logged
    or written here; a run that fails (NaN, collapse, pruned) fails on rank 0 too, which records it."""

    def train(order: TrainOrder) -> None:
        config = order.config
        dataset = load_for_config(config.data)
        seed_everything(config.train.seed)
        m = config.model
        backbone = build_backbone(m.backbone, m.stem, m.weights, m.weights_sha256)
        trainer = build_ssl_trainer(config, dataset, backbone, ctx.device, False, ctx)
        if order.state is not None:
            trainer.load_state_dict(order.state)
        with contextlib.suppress(TrainingFailed, RunPruned):  # rank 0 records why the run ended
            trainer.fit(start_epoch=order.start_epoch, on_epoch_end=on_main_then_agree(ctx, None))

    return follow(ctx, train)


def _relog_last_epoch(tracker: Tracker, run_id: str, checkpoint: dict) -> None:
    """A run stopped between its checkpoint and its metrics (tracking server down) gets them now."""
    if checkpoint["epoch"] not in tracker.logged_steps(run_id, "train.loss") and "epoch_metrics" in checkpoint:
        tracker.log_metrics(run_id, without_single_step(checkpoint["epoch_metrics"]), checkpoint["epoch"])


def check_collapse(stats: EpochStats, threshold: float) -> None:
    """After the epoch is logged and checkpointed, so the failed run shows how it got there."""
    if stats.embedding_spread < threshold:  # NaN (not measured) never counts as collapsed
        raise TrainingFailed(
            f"embeddings collapsed in epoch {stats.epoch + 1}: spread {stats.embedding_spread:.2g} "
            f"< train.collapse_threshold {threshold:g}"
        )
