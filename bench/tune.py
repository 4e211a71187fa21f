"""Optuna search over each method's main hyperparameters, through the same runner as ``bench run``.

Every trial is an MLflow run tagged with its study and trial number; the objective is validation
kNN accuracy (test is never looked at), and trials are pruned on the same metric per epoch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc

from bench.data import load_for_config
from bench.databases import check_database, is_database_server
from bench.errors import BenchError
from bench.evaluate import validation_knn_accuracy
from bench.ledger import Ledger
from bench.resolve import build_run_config, deep_merge
from bench.run import RunPruned, check_fits_data, execute
from bench.schema import RunConfig
from bench.tracking import Tracker
from datasets.augment import build_eval_transform
from methods import METHODS, get_method
from methods.base import SSLMethod

OBJECTIVE = "knn.val.accuracy"
SCHEMA_ATTEMPTS = 5  # tries to open a study while other processes create the same empty database's schema


def suggest(method: str, trial: optuna.Trial) -> dict[str, Any]:
    """The trial's config overrides: the learning rate, which every method searches, and the method's own
    options from its ``search_space`` (plain data on the method class). The learning rate goes in as the
    method's own optimizer value, so it also wins over a per-method value of the preset (the cpu
    preset's for BYOL)."""
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    options = {name: _suggest_one(trial, name, spec) for name, spec in get_method(method).search_space.items()}
    return {"method_optim": {method: {"lr": lr}}, "method_options": {method: options}}


def _suggest_one(trial: optuna.Trial, name: str, spec: tuple[Any, ...]) -> Any:
    kind, *args = spec
    if kind == "float":
        low, high, log = args
        return trial.suggest_float(name, low, high, log=log)
    if kind == "categorical":
        return trial.suggest_categorical(name, list(args[0]))
    raise ValueError(f"unknown search-space kind {kind!r} for {name!r}; valid: float, categorical")


def open_study(name: str, storage: str | None, default_dir: Path, sampler_seed: int = 0) -> optuna.Study:
    """A study in any RDB URL, or (default) a journal file that several processes can share. The
    sampler is seeded so one worker's search repeats; workers sharing a study need distinct seeds."""
    if storage is None:
        default_dir.mkdir(parents=True, exist_ok=True)
        backend = optuna.storages.journal.JournalFileBackend(str(default_dir / "optuna-journal.log"))
        storage_obj: Any = optuna.storages.JournalStorage(backend)
    else:
        if is_database_server(storage):
            check_database(storage, "Optuna storage")
        storage_obj = storage
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            return optuna.create_study(
                study_name=name,
                storage=storage_obj,
                direction="maximize",
                load_if_exists=True,
                pruner=pruner,
                sampler=sampler,
            )
        except (ValueError, ImportError, sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError) as exc:
            if not _lost_schema_race(exc):
                raise BenchError(f"cannot open Optuna storage {storage}: {exc}") from None
            time.sleep(0.2 * (attempt + 1))  # let the winner finish the schema; the retry then finds it made
    raise BenchError(f"cannot open Optuna storage {storage}: other processes kept creating its schema")


def _lost_schema_race(exc: BaseException) -> bool:
    """Two processes made the schema (or the study) of an empty database at once and this one lost: a
    duplicate row (IntegrityError) or, on PostgreSQL, a table another process created between the check
    and the CREATE (DuplicateTable, "relation ... already exists")."""
    if isinstance(exc, sqlalchemy.exc.IntegrityError):
        return True
    return isinstance(exc, sqlalchemy.exc.ProgrammingError | sqlalchemy.exc.OperationalError) and (
        "already exists" in str(exc)
    )


def check_request(method: str, trials: int) -> None:
    """Before any study or store is opened."""
    try:
        get_method(method)
    except ValueError:
        raise BenchError(f"cannot tune {method!r}; tunable methods: {', '.join(METHODS)}") from None
    if trials < 1:
        raise BenchError(f"--trials must be at least 1, got {trials}")


def tune(
    tree: dict[str, Any],
    method: str,
    dataset: str,
    trials: int,
    study: optuna.Study,
    tracker: Tracker,
    ledger: Ledger,
    progress: bool = False,
    run_tags: dict[str, str] | None = None,
) -> optuna.Study:
    """``trials`` trials of the study; ``run_tags`` go on each trial's run too (e.g. the Ray node)."""
    check_request(method, trials)
    train = tree.get("train") or {}
    batch_size, seed = int(train.get("batch_size", 64)), int(train.get("seed", 0))
    check_fits_data(build_run_config(tree, method, dataset, batch_size, seed))

    def objective(trial: optuna.Trial) -> float:
        config = build_run_config(deep_merge(tree, suggest(method, trial)), method, dataset, batch_size, seed)
        tags = {"optuna.study": study.study_name, "optuna.trial": str(trial.number), **(run_tags or {})}
        outcome = execute(
            config, tracker, ledger, progress=progress, epoch_hook=_pruning_hook(trial, config), extra_tags=tags
        )
        if outcome.status == "PRUNED":
            raise optuna.TrialPruned(outcome.note)
        if OBJECTIVE not in outcome.metrics:
            raise optuna.TrialPruned(f"run {outcome.name} ended {outcome.status}: {outcome.note}")
        return outcome.metrics[OBJECTIVE]

    study.optimize(objective, n_trials=trials)
    return study


def _pruning_hook(trial: optuna.Trial, config: RunConfig):
    dataset = load_for_config(config.data)
    transform = build_eval_transform(dataset.image_size)

    def hook(epoch: int, method: SSLMethod) -> None:
        method.eval()
        device = next(method.parameters()).device
        accuracy = validation_knn_accuracy(
            method.embed,
            dataset,
            transform,
            device,
            config.eval.knn_k,
            config.eval.knn_temperature,
            config.eval.batch_size,
        )
        trial.report(accuracy, epoch)
        if trial.should_prune():
            raise RunPruned(f"validation kNN accuracy {accuracy:.3f} after epoch {epoch + 1}")

    return hook
