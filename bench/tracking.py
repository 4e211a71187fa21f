"""MLflow tracking: a local SQLite store by default, any tracking URI (server, database) on request.

Uses ``MlflowClient`` directly rather than MLflow's global active run, so several runs in one
process (a sweep) never leak state into each other.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import numpy
import requests
import sqlalchemy.exc
import torch
import torchvision
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, Run, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

from bench.databases import check_database, is_database_server
from bench.errors import BenchError

DEFAULT_STORE_DIR = Path("mlruns")
_BATCH = 100  # MLflow's log_batch accepts at most 100 params per call
_INSERT_ATTEMPTS = 4  # a row inserted by a concurrent writer is found on the next attempt
_UNIQUE_VIOLATION = re.compile(r"UniqueViolation|UNIQUE constraint failed|Duplicate entry|duplicate key value")


def _lost_insert_race(reason: str) -> bool:
    """The database refused a row another writer had just inserted (PostgreSQL, SQLite or MySQL wording)."""
    return _UNIQUE_VIOLATION.search(reason) is not None


HEALTH_TIMEOUT_SECONDS = 5
HTTP_RETRY_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def default_tracking_uri() -> str:
    return f"sqlite:///{(DEFAULT_STORE_DIR / 'mlflow.db').resolve()}"


def local_store_dir(uri: str) -> Path | None:
    """The directory a local store writes to, or None for a remote server."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return Path(uri.removeprefix("sqlite:///")).parent
    if parsed.scheme in ("", "file"):
        return Path(parsed.path if parsed.scheme else uri)
    return None


def in_memory(uri: str) -> bool:
    """``sqlite://``, ``sqlite:///:memory:`` and the like: a store that is gone when the process exits."""
    parsed = urlparse(uri)
    database = parsed.path.removeprefix("/")
    return parsed.scheme.startswith("sqlite") and (database in ("", ":memory:") or "mode=memory" in parsed.query)


def check_store(uri: str) -> None:
    """Fail before any training when runs could not be logged or kept: an in-memory store, a local store
    that cannot be written or a tracking server that does not answer. Creates nothing."""
    if in_memory(uri):
        raise BenchError(
            f"--tracking-uri {uri} is an in-memory store whose runs vanish when bench exits; "
            "use a file (sqlite:///path/to/mlflow.db) or omit --tracking-uri"
        )
    directory = local_store_dir(uri)
    if directory is None:
        check_reachable(uri)
        return
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise BenchError(f"tracking directory {directory} cannot be created: {existing} is a file")
    try:  # a file created and removed at once: works for root and read-only mounts alike
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise BenchError(f"tracking directory {directory} is not writable ({exc.strerror})") from None


def check_reachable(uri: str) -> None:
    """One quick request to the server's health endpoint, so a wrong address or a stopped server is
    reported in seconds rather than after MLflow's retries; a database URL gets one connection."""
    if is_database_server(uri):
        check_database(uri, "tracking store")
        return
    if urlparse(uri).scheme not in ("http", "https"):
        return
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_SECONDS).raise_for_status()
    except requests.RequestException as exc:
        errno = re.search(r"\[Errno -?\d+\] ([^\"')]+)", str(exc))
        reason = errno.group(1).strip().lower() if errno else type(exc).__name__
        raise BenchError(
            f"tracking server {uri} is not reachable ({reason}); start it (mlflow server ...) "
            "or omit --tracking-uri to use the local store"
        ) from None


def bound_http_retries() -> None:
    """MLflow retries a dead server for about four minutes by default; a run should fail within
    seconds instead, keeping its checkpoint. Values set in the environment win."""
    for name, value in HTTP_RETRY_DEFAULTS.items():
        os.environ.setdefault(name, value)


class TrackingUnavailable(BenchError):
    """The tracking store stopped answering during a run: the run's checkpoint is kept for a resume."""


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost exception (``database or disk is full``, ``attempt to write a
    readonly database``, ``Connection refused``), which is what the user can act on; the wrappers above
    it say how it surfaced (``raised as a result of Query-invoked autoflush``). Follows the chain as a
    traceback prints it: the explicit cause, else the context unless it was suppressed."""
    seen = {id(exc)}
    while True:
        inner = exc.__cause__ if exc.__cause__ is not None else (None if exc.__suppress_context__ else exc.__context__)
        if inner is None or id(inner) in seen:
            break
        seen.add(id(inner))
        exc = inner
    text = str(exc).strip()
    return text.splitlines()[0][-300:] if text else type(exc).__name__


_store_calls = 0  # calls into the store in progress in this process (they nest)
_held_stop: list[BaseException] = []  # a stop signal's exception, held until the store call returns


def stop_or_hold(stop: BaseException) -> None:
    """What a stop-signal handler calls: raise ``stop`` now or, during a call into the store, as soon as
    that call returns. Raised inside SQLAlchemy, an exception can leave a pooled SQLite connection in
    its transaction, holding the database lock, so every later write of the process (marking the run
    KILLED) fails with "database is locked". A second stop while one is held is raised at once: a way
    out of a store call that hangs."""
    if _store_calls and not _held_stop:
        _held_stop.append(stop)
        return
    _held_stop.clear()
    raise stop


@contextlib.contextmanager
def _store_call() -> Iterator[None]:
    global _store_calls
    _store_calls += 1
    try:
        yield
    finally:
        _store_calls -= 1
    if _held_stop and not _store_calls:
        raise _held_stop.pop()


_OPENED: set[str] = set()  # the SQLite stores this process has created or found ready


def open_store(uri: str) -> None:
    """Create and migrate a new local SQLite store under a file lock beside the database, once per
    process: two processes that open a fresh store at once both run MLflow's schema migration
    otherwise, and one fails ("duplicate column", "table already exists"). Other stores: nothing."""
    if uri in _OPENED or urlparse(uri).scheme != "sqlite":
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    try:
        lock = os.open(database.with_name(database.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:  # a read-only folder: no store can be created in it, so no creation can race
        _OPENED.add(uri)
        return
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the descriptor is closed
        MlflowClient(tracking_uri=uri)  # builds the store: creates and migrates its tables if new
    finally:
        os.close(lock)
    _OPENED.add(uri)


@dataclass(frozen=True)
class DatasetRecord:
    """One dataset a run used, as MLflow's run inputs hold it (the UI's Dataset column): ``source`` is
    the JSON of a source of ``source_type`` (``local``: ``{"uri": ...}``), ``context`` what the run did
    with it (``training``, ``validation``, ``testing``), ``profile`` a JSON summary."""

    name: str
    digest: str
    source_type: str
    source: str
    context: str
    profile: str | None = None


@dataclass(frozen=True)
class Tracker:
    """An MLflow store and the experiment runs are logged to. ``experiment`` None: one experiment per
    dataset, named after it (``for_dataset`` picks a run's). ``run_tags``: tags every run it starts or
    restarts gets besides its own (the sweep's preset and study file)."""

    uri: str
    experiment: str | None = None
    run_tags: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        bound_http_retries()

    def for_dataset(self, dataset: str) -> Tracker:
        """The tracker of a run on ``dataset``: this one if it names its experiment, else one whose
        experiment is the dataset's name."""
        return self if self.experiment is not None else dataclasses.replace(self, experiment=dataset)

    @property
    def client(self) -> MlflowClient:
        open_store(self.uri)
        return MlflowClient(tracking_uri=self.uri)

    def experiment_id(self) -> str:
        if self.experiment is None:
            raise ValueError("a Tracker without an experiment logs per dataset: use tracker.for_dataset(name)")
        directory = local_store_dir(self.uri)
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
        with _store_call():
            client = self.client
            found = client.get_experiment_by_name(self.experiment)
            if found is not None:
                return found.experiment_id
            location = (directory / "artifacts").resolve().as_uri() if directory else None
            try:
                return client.create_experiment(self.experiment, artifact_location=location)
            except MlflowException as exc:  # another worker created it between our lookup and now
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                return client.get_experiment_by_name(self.experiment).experiment_id

    @contextlib.contextmanager
    def writing(self, what: str) -> Iterator[None]:
        """Turn a store that stopped accepting writes (server down, disk full) into one clear line with
        the root cause; MLflow's own log of the failed write (a whole traceback) is held back meanwhile."""
        database_log = logging.getLogger("mlflow.store.db.utils")
        level = database_log.level
        with _store_call():
            database_log.setLevel(logging.CRITICAL)
            try:
                yield
            except (MlflowException, OSError, requests.RequestException, sqlalchemy.exc.SQLAlchemyError) as exc:
                reason = root_cause(exc)
                raise TrackingUnavailable(f"cannot {what} in the tracking store {self.uri}: {reason}") from None
            finally:
                database_log.setLevel(level)

    def start_run(self, name: str, params: dict[str, str], tags: dict[str, str]) -> str:
        with self.writing("create a run"):
            run = self.client.create_run(self.experiment_id(), run_name=name, tags={**dict(self.run_tags), **tags})
            self._log_params(run.info.run_id, params)
        return run.info.run_id

    def _log_params(self, run_id: str, params: dict[str, str]) -> None:
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), _BATCH):
            self.client.log_batch(run_id, params=items[start : start + _BATCH])

    def find_runs(self, config_hash: str) -> list[Run]:
        """Runs of this experiment with the given config hash, newest first."""
        query = f"tags.config_hash = '{config_hash}'"
        with _store_call():
            return self.client.search_runs([self.experiment_id()], filter_string=query, order_by=["start_time DESC"])

    def logged_steps(self, run_id: str, key: str) -> set[int]:
        """The steps at which the run has a value of the metric."""
        with _store_call():
            return {metric.step for metric in self.client.get_metric_history(run_id, key)}

    def reopen(self, run_id: str) -> None:
        """Mark an interrupted run as running again (and forget why it stopped) before resuming it."""
        client = self.client
        with self.writing("reopen the run"):
            client.update_run(run_id, status="RUNNING")
            if "failure_reason" in client.get_run(run_id).data.tags:
                client.delete_tag(run_id, "failure_reason")

    def restart(self, run_id: str, params: dict[str, str], tags: dict[str, str]) -> None:
        """Start an interrupted run over in place (a process killed before its first checkpoint left it
        RUNNING), so its configuration keeps one run: running again, tags of this start, and the params
        it had not logged yet (those it had are the same config, bar paths and device)."""
        self.reopen(run_id)
        with self.writing("restart the run"):
            logged = self.client.get_run(run_id).data.params
            self._log_params(run_id, {k: v for k, v in params.items() if k not in logged})
        self.set_tags(run_id, {**dict(self.run_tags), **tags})

    def log_datasets(self, run_id: str, records: list[DatasetRecord]) -> None:
        """The run's data as MLflow dataset inputs (``mlflow.log_input`` on the client)."""
        inputs = [
            DatasetInput(
                Dataset(r.name, r.digest, r.source_type, r.source, profile=r.profile),
                [InputTag(MLFLOW_DATASET_CONTEXT, r.context)],
            )
            for r in records
        ]
        for attempt in range(_INSERT_ATTEMPTS):
            try:
                with self.writing("log the datasets"):
                    self.client.log_inputs(run_id, datasets=inputs)
                return
            except TrackingUnavailable as exc:
                # MLflow's get-or-create of a dataset row races between processes that log the same
                # data at once; the loser's retry finds the row the winner committed.
                if not _lost_insert_race(str(exc)) or attempt == _INSERT_ATTEMPTS - 1:
                    raise
                time.sleep(0.2 * (attempt + 1))

    def log_metrics(self, run_id: str, values: dict[str, float], step: int) -> None:
        timestamp = _now_ms()
        metrics = [Metric(k, float(v), timestamp, step) for k, v in values.items()]
        with self.writing("log metrics"):
            self.client.log_batch(run_id, metrics=metrics)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        with self.writing("set tags"):
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        with self.writing(f"store the artifact {path.name}"):
            self.client.log_artifact(run_id, str(path), folder)

    def finish(self, run_id: str, status: str) -> None:
        with self.writing(f"mark the run {status}"):
            self.client.set_terminated(run_id, status)


def environment_tags() -> dict[str, str]:
    """Where and with what a run was made: harness commit and the versions that change numbers."""
    return {
        "git_commit": harness_commit(),
        "mlflow.source.git.commit": harness_commit(),
        "version.python": sys.version.split()[0],
        "version.torch": torch.__version__,
        "version.torchvision": torchvision.__version__,
        "version.numpy": numpy.__version__,
        "version.mlflow": mlflow.__version__,
        "host.platform": platform.platform(),
        "host.cpus": str(os.cpu_count()),
        # CPU results repeat bit for bit only at the same intra-op thread count (--workers splits it).
        "host.torch_threads": str(torch.get_num_threads()),
    }


def harness_commit() -> str:
    """The harness's own git commit (``-dirty`` with local changes), or ``unknown`` outside a checkout."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def _now_ms() -> int:
    return int(time.time() * 1000)
