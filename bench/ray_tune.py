"""``bench tune --ray ADDRESS``: each trial a Ray task against one Optuna study in a shared database.

Why not Ray Tune: its Optuna searcher asks and tells from the driver, so the study would live in the
driver's memory and end with it, and Ray Tune's own trial runner, checkpoints and result folders
would stand beside the MLflow runs and the resume logic ``bench run`` already has. Here the study
stays in the shared storage (PostgreSQL), every trial goes through the same ``tune`` as on one machine
(an MLflow run tagged with its study and trial, pruned per epoch by the median pruner, which reads
every other trial's reports from the storage), and a driver that dies leaves a study that a rerun
extends. Each task's sampler has its own seed, so concurrent trials do not propose the same point.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import optuna
import torch

from bench.cluster import check_fits, connect
from bench.errors import BenchError
from bench.ray_sweep import NODE_TAG, RETRIES, DriverLedger
from bench.tracking import Tracker
from bench.tune import open_study, tune


def check_storage_shared(storage: str | None, address: str) -> None:
    """Every node reaches the study: a journal or SQLite file would need locks over a network filesystem."""
    if address != "local" and (storage is None or urlparse(storage).scheme in ("", "file", "sqlite")):
        raise BenchError(
            f"bench tune --ray {address} needs --storage on a database server every node reaches "
            "(e.g. postgresql://user@host/optuna); see docs/cluster.md"
        )


def trial_task(
    tree: dict[str, Any], method: str, dataset: str, study_name: str, storage: str | None, seed: int, tracker: Tracker,
    state_dir: str, threads: int,
) -> None:  # fmt: skip
    """One trial of the shared study, on whichever node Ray chose."""
    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(study_name, storage, Path(state_dir), seed)
    import ray

    node = {NODE_TAG: ray.get_runtime_context().get_node_id()}
    tune(tree, method, dataset, 1, study, tracker, DriverLedger(Path(state_dir)), progress=False, run_tags=node)


def tune_on_ray(
    tree: dict[str, Any], method: str, dataset: str, trials: int, study_name: str, storage: str | None,
    sampler_seed: int, tracker: Tracker, state_dir: Path, address: str, cpus: float, gpus: float,
) -> optuna.Study:  # fmt: skip
    """``trials`` trial tasks at once (the cluster runs as many as fit); the study afterwards."""
    ray = connect(address)
    try:
        check_fits(ray, cpus, gpus)
        tracker.for_dataset(dataset).experiment_id()  # created once here, not by racing trials
        study = open_study(study_name, storage, state_dir, sampler_seed)  # created once, here
        task = ray.remote(trial_task).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=RETRIES, retry_exceptions=False, scheduling_strategy="SPREAD"
        )
        threads = max(1, int(cpus))
        refs = [
            task.remote(
                tree, method, dataset, study_name, storage, sampler_seed + 1 + n, tracker, str(state_dir), threads
            )
            for n in range(trials)
        ]
        print(f"bench: {trials} trial(s) of study {study_name!r} submitted to Ray", file=sys.stderr, flush=True)
        for done, ref in enumerate(refs, start=1):
            try:
                ray.get(ref)
            except ray.exceptions.RayError as exc:
                first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                print(f"bench: a trial failed: {first.strip()[:300]}", file=sys.stderr, flush=True)
            print(f"bench: ray: {done} of {trials} trial task(s) ended", file=sys.stderr, flush=True)
        return study
    finally:
        ray.shutdown()
