"""What each ``bench`` command does, and its user-facing output; the parser is bench/cli.py."""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import EXIT_USAGE, BenchError
from bench.launch import launch, under_torchrun, without_option
from bench.ledger import Ledger
from bench.process_group import COMMAND_LINE_TIMEOUT, DistributedContext, end_followers, init_from_env, shutdown
from bench.resolve import apply_sets, resolve_tree, set_path
from bench.tracking import Tracker, check_store, default_tracking_uri, local_store_dir
from bench.ui import DEFAULT_ADDRESS, compare_lines, experiment_links, is_loopback, serve_ui
from datasets import DataRequest, DatasetError, check_dataset, load_dataset

if TYPE_CHECKING:
    from bench.schema import RunConfig

SUMMARY_METRICS = (
    "knn.test.accuracy",
    "knn.test.balanced_accuracy",
    "linear.test.accuracy",
    "linear.test.balanced_accuracy",
    "finetune.test.accuracy",
    "finetune.test.balanced_accuracy",
)


def _state_dir(uri: str) -> Path:
    """Where locks, checkpoints and the Optuna journal live: beside a local store, else ./.bench-state."""
    return local_store_dir(uri) or Path(".bench-state")


MAX_EXPERIMENT_NAME = 256  # the width of the experiment name column in MLflow's SQL stores


def run(args: argparse.Namespace) -> int:
    from bench.sweep import expand

    if args.workers < 1:
        raise BenchError(f"--workers must be at least 1, got {args.workers}")
    if args.nproc < 1:
        raise BenchError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and args.workers > 1:
        raise BenchError("--nproc and --workers cannot be combined: use one to split each run, the other the sweep")
    experiment = sweep_experiment(args)
    if experiment is not None:
        check_experiment_name(experiment)
    if args.dry_run:
        return _plan(args)
    if not under_torchrun():  # torchrun's ranks get their share from the launching process
        use_threads(args.threads)
    if args.ray:
        from bench.cluster_commands import run_on_cluster

        return run_on_cluster(args)
    if args.state_dir:
        raise BenchError("--state-dir is for --ray (checkpoints on storage every node shares)")
    from bench.workers import Terminated, stop_signals

    try:
        with stop_signals():  # SIGTERM as Ctrl-C: runs in progress are marked KILLED, checkpoints kept
            if under_torchrun():
                return _run_as_rank(args)
            if args.nproc > 1:
                # Every bad input is refused here, once, before any process starts (exit 2, one line).
                tree = resolve_tree(args.preset, args.config, args.overrides)
                check_batches_split(expand(tree), args.nproc)
                check_store(args.tracking_uri or default_tracking_uri())
                argv = without_option(args.argv, "--nproc")
                if "sync_batchnorm" not in (tree.get("train") or {}):
                    # Unless told otherwise, N processes train like one with the global batch: BatchNorm
                    # statistics over the global batch too.
                    argv += ["--set", "train.sync_batchnorm=true"]
                return launch(args.nproc, argv)
            return _run_sweep_on_rank_zero(args, None)
    except Terminated as stop:
        print(f"bench: stopped by {stop}; interrupted runs are KILLED and resume on a rerun", file=sys.stderr)
        return 128 + signal.Signals[str(stop)]  # as a shell reports a process the signal ended


def check_batches_split(configs: Iterable[RunConfig], nproc: int) -> None:
    """Each run's global batch must split evenly over the ``nproc`` processes (torchrun or Ray Train)."""
    for config in configs:
        if config.train.batch_size % nproc:
            raise BenchError(f"batch size {config.train.batch_size} does not split evenly over --nproc {nproc}")


def _run_sweep_on_rank_zero(args: argparse.Namespace, ctx: DistributedContext | None) -> int:
    """The sweep, its output and exit code: in the ``bench run`` process, or on rank 0 of ``--nproc``."""
    from bench.sweep import expand
    from bench.workers import run_sweep

    configs = expand(resolve_tree(args.preset, args.config, args.overrides))  # every value checked, nothing written
    tracker = Tracker(args.tracking_uri or default_tracking_uri(), sweep_experiment(args), preset_tags(args))
    check_store(tracker.uri)
    ledger = Ledger(_state_dir(tracker.uri))
    workers = min(args.workers, len(configs))
    experiments = list(dict.fromkeys(tracker.for_dataset(c.data.name).experiment for c in configs))
    print(
        f"bench: {len(configs)} run(s) -> experiment{'s' if len(experiments) > 1 else ''} "
        + ", ".join(map(repr, experiments))
        + f" at {tracker.uri}"
        + (f" ({workers} worker processes)" if workers > 1 else ""),
        file=sys.stderr,
    )
    outcomes = run_sweep(configs, tracker, ledger, workers, force=args.force, progress=not args.no_progress, ctx=ctx)
    return _sweep_summary(configs, outcomes, tracker)


def _sweep_summary(configs: list, outcomes: list, tracker: Tracker) -> int:
    """The runs table, counts per status and where to look next; the sweep's exit code."""
    _print_summary(outcomes)
    counts = Counter(o.status for o in outcomes)
    print(f"\n{len(outcomes)} run(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    skipped = counts["SKIPPED"]
    if skipped:
        print(f"{skipped} of {len(outcomes)} run(s) skipped (finished already or running elsewhere; --force reruns)")
    print(f"\nSide by side with the baselines: bench compare --tracking-uri '{tracker.uri}'")
    print(f"Open the results: bench ui --tracking-uri '{tracker.uri}'  (then {DEFAULT_ADDRESS})")
    for line in compare_lines(configs, outcomes, tracker):
        print(line)
    return 0 if all(o.status in ("FINISHED", "SKIPPED") for o in outcomes) else 1


def sweep_experiment(args: argparse.Namespace) -> str | None:
    """The experiment every run of ``bench run`` goes to: ``--experiment``, else the ``--config`` study
    file's name (``studies/isic2017-cpu.yaml``: ``isic2017-cpu``); None: each run to its dataset's."""
    if args.experiment is not None:
        return args.experiment
    return Path(args.config).stem if args.config else None


def preset_tags(args: argparse.Namespace) -> tuple[tuple[str, str], ...]:
    """Tags of every run of the command: its ``preset`` (reports warn about smoke runs) and, with
    ``--config``, the file's name as ``config_file``."""
    return (("preset", args.preset),) + ((("config_file", Path(args.config).name),) if args.config else ())


def _plan(args: argparse.Namespace) -> int:
    """``--dry-run``: resolve and validate the sweep exactly as a run would (data included), print the
    runs it would start, and write nothing (no store, lock or checkpoint)."""
    from bench.run import run_name
    from bench.sweep import expand

    configs = expand(resolve_tree(args.preset, args.config, args.overrides))
    experiment = sweep_experiment(args)
    for config in configs:
        print(f"{run_name(config)}  {config.config_hash()}  experiment {experiment or config.data.name}")
    print(f"\n{len(configs)} run(s) planned; nothing was written (--dry-run)")
    return 0


def use_threads(requested: int | None) -> None:
    """The run's torch threads (``--threads``, ``OMP_NUM_THREADS`` or the free cores), set before anything
    trains; worker processes and torchrun ranks split this budget between them."""
    import os

    import torch

    from bench.threads import choose_threads

    choice = choose_threads(requested)
    if choice.note:
        print(choice.note, file=sys.stderr)
    torch.set_num_threads(choice.threads)
    os.environ["OMP_NUM_THREADS"] = str(choice.threads)


def check_experiment_name(name: str) -> None:
    """Refused here rather than inside MLflow, after the store and its locks exist."""
    if not name or not name.strip() or name != name.strip():
        raise BenchError(f"--experiment must be a non-empty name without leading or trailing spaces, got {name!r}")
    if len(name) > MAX_EXPERIMENT_NAME:
        raise BenchError(f"--experiment must be at most {MAX_EXPERIMENT_NAME} characters, got {len(name)}")


def _run_as_rank(args: argparse.Namespace) -> int:
    """``bench run`` as one of the processes ``--nproc`` (or a user's ``torchrun -m bench run``) started:
    rank 0 runs the sweep as a single process would, training each SSL run together with the other
    ranks; the other ranks only train, and print nothing but errors."""
    from bench.devices import resolve_device
    from bench.run import follow_rank_zero

    device = resolve_tree(args.preset, args.config, args.overrides).get("device", "auto")
    ctx = init_from_env(resolve_device(device), timeout=COMMAND_LINE_TIMEOUT)
    try:
        if not ctx.is_main:
            follow_rank_zero(ctx)
            return 0
        code = _run_sweep_on_rank_zero(args, ctx)
        end_followers(ctx)  # only after a sweep that ended normally; after a crash torchrun stops every rank
        return code
    finally:
        shutdown()


def tune(args: argparse.Namespace) -> int:
    import optuna

    from bench.tune import OBJECTIVE, check_request, open_study, tune

    check_request(args.method, args.trials)
    if args.experiment is not None:
        check_experiment_name(args.experiment)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Trials go to --experiment, else to the experiment of their dataset, as bench run's runs do.
    tracker = Tracker(args.tracking_uri or default_tracking_uri(), args.experiment, preset_tags(args))
    check_store(tracker.uri)
    overrides: dict[str, Any] = {}
    if args.data_root:
        set_path(overrides, ("data", "root"), args.data_root)
    if args.epochs is not None:
        set_path(overrides, ("train", "epochs"), args.epochs)
    apply_sets(overrides, args.set)
    tree = resolve_tree(args.preset, args.config, overrides)
    state = _state_dir(tracker.uri)
    name = args.study or f"tune-{args.method}-{args.dataset}"
    if args.ray:
        from bench.cluster_commands import tune_on_cluster

        study = tune_on_cluster(args, tree, name, tracker)
    else:
        if args.state_dir:
            raise BenchError("--state-dir is for --ray (checkpoints on storage every node shares)")
        study = open_study(name, args.storage, state, args.sampler_seed)
        tune(tree, args.method, args.dataset, args.trials, study, tracker, Ledger(state), progress=not args.no_progress)
    completed = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    if not completed:
        raise BenchError(f"no trial of study {study.study_name!r} completed ({pruned} pruned)")
    print(f"study {study.study_name!r}: {len(completed)} complete, {pruned} pruned")
    print(f"best {OBJECTIVE} = {study.best_value:.4f} (trial {study.best_trial.number}) with:")
    for key, value in study.best_params.items():
        print(f"  {key}: {value}")
    return 0


def report(args: argparse.Namespace) -> int:
    from reports import build_report

    uri = args.tracking_uri or default_tracking_uri()
    require_existing_store(uri)
    formats = tuple(f for f in args.formats.split(",") if f)
    try:
        summary = build_report(uri, args.experiment, Path(args.out), formats)
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    print(f"report over {summary.runs} run(s) ({summary.finished_runs} finished):")
    for path in summary.files:
        print(f"  {path}")
    for note in summary.notes:
        print(f"note: {note}")
    return 0


def _print_summary(outcomes) -> None:
    shown = [m for m in SUMMARY_METRICS if any(m in o.metrics for o in outcomes)] or list(SUMMARY_METRICS[:4])
    header = ["run", "status", "minutes", *shown]
    rows = [
        [
            o.name,
            o.status,
            f"{o.seconds / 60:.1f}",
            *(f"{o.metrics[m]:.3f}" if m in o.metrics else "-" for m in shown),
        ]
        for o in outcomes
    ]
    rows += baseline_rows(outcomes, shown)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    for o in outcomes:
        if o.note:
            print(f"{o.name}: {o.note}")


def baseline_rows(outcomes, shown: list[str]) -> list[list[str]]:
    """What a classifier that learned nothing scores on each dataset of the sweep (logged by every run as
    ``baseline.<kind>.<split>.<metric>``), under the runs, so no score is read without them."""
    rows: dict[tuple[str, str], list[str]] = {}
    for o in outcomes:
        dataset = o.name.rsplit("-", 2)[0].rsplit("-", 1)[-1]  # <method>-<dataset>-b<batch>-s<seed>
        for kind, label in (("majority", "majority class"), ("chance", "chance")):
            values = [o.metrics.get(_baseline_metric(m, kind)) for m in shown]
            if (dataset, kind) not in rows and any(v is not None for v in values):
                cells = [f"{v:.3f}" if v is not None else "-" for v in values]
                rows[(dataset, kind)] = [f"{label} ({dataset})", "", "", *cells]
    return list(rows.values())


def _baseline_metric(metric: str, kind: str) -> str:
    """``knn.test.accuracy`` -> ``baseline.majority.test.accuracy``."""
    _, split, name = metric.split(".", 2)
    return f"baseline.{kind}.{split}.{name}"


def compare(args: argparse.Namespace) -> int:
    """The report's comparison table, as text: the same code, so terminal and PDF never disagree."""
    from reports import compare_text

    uri = args.tracking_uri or default_tracking_uri()
    require_existing_store(uri)
    try:
        print(compare_text(uri, args.experiment))
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    return 0


def reproduce(args: argparse.Namespace) -> int:
    """``bench reproduce``: a sweep through ``run`` above, then its page beside the paper's figures."""
    from bench.reproduce import run_reproduce

    return run_reproduce(args)


def _data_request(args: argparse.Namespace) -> DataRequest:
    return DataRequest(
        image_size=args.size,
        root=Path(args.root) if args.root else None,
        task=args.task,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )


def data_check(args: argparse.Namespace) -> int:
    try:
        report = check_dataset(args.name, _data_request(args))
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    print(report.format())
    return 0 if report.ok else EXIT_USAGE


def data_prepare(args: argparse.Namespace) -> int:
    try:
        dataset = load_dataset(args.name, _data_request(args))
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits().items())
    print(f"{dataset.name} ({dataset.task}) decoded at {dataset.image_size} px: {sizes}")
    return 0


def data_download(args: argparse.Namespace) -> int:
    from datasets.download import download_dataset

    try:
        summary = download_dataset(args.name, Path(args.root), base_url=args.base_url)
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    print(summary)
    return 0


def ui(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    require_existing_store(uri)
    check_port_free(args.host, args.port)
    if not is_loopback(args.host):
        print(
            f"bench: WARNING: the MLflow UI has no authentication: anyone who can reach {args.host}:{args.port} "
            "can read, change and delete runs; use --host 127.0.0.1 (and an SSH tunnel) unless that is intended",
            file=sys.stderr,
            flush=True,
        )
    base_url = f"http://{args.host}:{args.port}"
    print(
        f"MLflow UI for {uri} at {base_url}  (Ctrl-C to stop); per experiment its runs table and compare view:",
        flush=True,
    )
    print("\n".join(experiment_links(uri, base_url)) or "  (no runs yet)", flush=True)
    return serve_ui(uri, args.host, args.port)


def require_existing_store(uri: str) -> None:
    """Reading commands must not create an empty SQLite store where the user mistyped a path."""
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise BenchError(f"no MLflow store at {uri} yet: run `bench run` first, or pass --tracking-uri")


def check_port_free(host: str, port: int) -> None:
    """A port out of range or taken is reported before the server starts, not as its traceback."""
    if not 1 <= port <= 65535:
        raise BenchError(f"--port must be in 1-65535, got {port}")
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise BenchError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port") from None
