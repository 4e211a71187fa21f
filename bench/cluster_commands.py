"""``bench run --ray`` and ``bench tune --ray``: every input checked (flags, Ray installed, cluster
address, stores every node reaches) before the cluster is joined; the work itself is in
bench/ray_sweep.py and bench/ray_tune.py. Ray is imported only here, on request: it is an extra."""

from __future__ import annotations

import argparse
import copy
import dataclasses
from pathlib import Path
from typing import Any

from bench.cluster import check_address, check_request, import_ray
from bench.commands import _state_dir, _sweep_summary, check_batches_split, preset_tags, sweep_experiment
from bench.errors import BenchError
from bench.resolve import resolve_tree, set_path
from bench.schema import RunConfig
from bench.tracking import Tracker, check_store, default_tracking_uri, local_store_dir


def check_store_shared(uri: str, address: str) -> None:
    """Every node logs to the store: a local SQLite file would need its locks over a network filesystem."""
    if address != "local" and local_store_dir(uri) is not None:
        raise BenchError(
            f"--ray {address} needs a tracking store every node reaches (an `mlflow server` URL or "
            f"postgresql://...), not the local store {uri}; see docs/cluster.md"
        )


def absolute_data_paths(config: RunConfig) -> RunConfig:
    """The data root and cache folder as the driver means them: a task's working folder is Ray's, on
    another machine. Paths are not part of a run's identity, so its config hash stays the same."""
    paths = {key: str(Path(value).resolve()) for key in ("root", "cache_dir") if (value := getattr(config.data, key))}
    return dataclasses.replace(config, data=dataclasses.replace(config.data, **paths)) if paths else config


def run_on_cluster(args: argparse.Namespace) -> int:
    """``--ray``: the sweep on a Ray cluster (bench/ray_sweep.py); each bad input is refused first."""
    from bench.sweep import expand

    if args.workers > 1 or args.force:
        raise BenchError("--ray cannot be combined with --workers or --force yet")
    check_request(args.cpus_per_run, args.gpus_per_run)
    import_ray()
    check_address(args.ray)
    configs = [absolute_data_paths(c) for c in expand(ddp_tree(args))]
    check_batches_split(configs, args.nproc)
    tracker = Tracker(args.tracking_uri or default_tracking_uri(), sweep_experiment(args), preset_tags(args))
    from bench.ray_sweep import run_on_ray

    check_store_shared(tracker.uri, args.ray)
    check_store(tracker.uri)
    state = Path(args.state_dir or _state_dir(tracker.uri)).resolve()
    outcomes = run_on_ray(configs, tracker, state, args.ray, args.cpus_per_run, args.gpus_per_run, args.nproc)
    return _sweep_summary(configs, outcomes, tracker)


def ddp_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep's tree; with ``--nproc`` > 1, BatchNorm over the global batch unless the sweep says
    otherwise, so N workers train like one process with the whole batch (as ``bench run --nproc`` does)."""
    tree = resolve_tree(args.preset, args.config, args.overrides)
    if args.nproc > 1 and "sync_batchnorm" not in (tree.get("train") or {}):
        overrides = copy.deepcopy(args.overrides)
        set_path(overrides, ("train", "sync_batchnorm"), True)
        tree = resolve_tree(args.preset, args.config, overrides)
    return tree


def tune_on_cluster(args: argparse.Namespace, tree: dict[str, Any], name: str, tracker: Tracker):
    """``bench tune --ray``: one Ray task per trial on one study (bench/ray_tune.py)."""
    check_request(args.cpus_per_run, args.gpus_per_run)
    import_ray()
    check_address(args.ray)
    from bench.ray_tune import check_storage_shared, tune_on_ray

    check_store_shared(tracker.uri, args.ray)
    check_storage_shared(args.storage, args.ray)
    state = Path(args.state_dir or _state_dir(tracker.uri)).resolve()
    return tune_on_ray(
        tree, args.method, args.dataset, args.trials, name, args.storage, args.sampler_seed, tracker, state,
        args.ray, args.cpus_per_run, args.gpus_per_run,
    )  # fmt: skip
