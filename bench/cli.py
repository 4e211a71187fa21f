"""The ``bench`` command line: argument parsing and user-facing output only; work happens elsewhere."""

from __future__ import annotations

import argparse
import socket
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from bench.ablation import ABLATIONS
from bench.config import PRESETS, deep_merge, load_preset, read_yaml
from bench.distributed import (
    COMMAND_LINE_TIMEOUT,
    DistributedContext,
    end_followers,
    init_from_env,
    launch,
    shutdown,
    under_torchrun,
    without_option,
)
from bench.errors import BenchError
from bench.ledger import Ledger
from bench.tracking import DEFAULT_EXPERIMENT, Tracker, check_store, default_tracking_uri, local_store_dir
from bench.ui import experiment_links, serve_ui
from datasets import DataRequest, DatasetError, check_dataset, load_dataset

EXIT_USAGE = 2
SUMMARY_METRICS = (
    "knn.test.accuracy",
    "knn.test.balanced_accuracy",
    "linear.test.accuracy",
    "linear.test.balanced_accuracy",
    "finetune.test.accuracy",
    "finetune.test.balanced_accuracy",
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what ``--nproc`` re-runs under torchrun
    try:
        return args.handler(args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bench", description="FG-SSL vs SimCLR, BYOL and Barlow Twins, reproducibly.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run_parser(sub)
    _add_tune_parser(sub)
    _add_report_parser(sub)
    _add_data_parser(sub)
    _add_ui_parser(sub)
    return parser


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment name")


def _add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="pretrain and evaluate every combination of the sweep axes")
    run.add_argument(
        "--methods",
        nargs="+",
        help="simclr byol barlow fgssl, 'all', or the references random_init (untrained; with --weights: the "
        "ImageNet reference) and supervised (cross-entropy on the train labels for the run's epochs)",
    )
    run.add_argument("--dataset", "--datasets", dest="datasets", nargs="+", help="synthetic (default), isic2017, ...")
    run.add_argument("--batch-sizes", nargs="+", type=int, help="one run per batch size")
    run.add_argument("--seeds", nargs="+", type=int, help="one run per seed")
    run.add_argument("--preset", default="cpu", choices=PRESETS, help="base configuration (default: cpu)")
    run.add_argument("--config", help="YAML file with config sections and sweep axes (overrides the preset)")
    run.add_argument("--data-root", help="folder with the dataset in its official layout")
    run.add_argument("--task", help="dataset task, e.g. 3class, melanoma or sk for isic2017")
    run.add_argument("--cache-dir", help="where decoded images are cached")
    run.add_argument("--epochs", type=int, help="SSL pretraining epochs")
    run.add_argument("--image-size", type=int, help="square input size in pixels")
    run.add_argument("--lr", type=float, help="base learning rate for every method")
    run.add_argument("--ablation", choices=ABLATIONS, help="run FG-SSL once per variant of a named ablation set")
    run.add_argument("--ablation-variants", metavar="A,B", help="only these variants of --ablation (default: all)")
    run.add_argument("--fgssl-levels", help="FG-SSL levels to train, e.g. 1,2,3 (concat step: --fgssl-concat)")
    run.add_argument("--fgssl-concat", choices=("yes", "no"), help="whether FG-SSL trains the concat step")
    run.add_argument("--fgssl-schedule", choices=("progressive", "joint"), help="four optimizer steps or one summed")
    run.add_argument("--embed-dim", type=int, help="FG-SSL embedding width")
    run.add_argument("--bt-variant", choices=("standard", "fgssl_code"), help="Barlow Twins loss form (FG-SSL, BT)")
    run.add_argument("--per-batch-permutation", action="store_true", help="one jigsaw order per batch (authors' code)")
    run.add_argument("--jigsaw-grids", help="FG-SSL tiles per side for levels 1-3, finest first, e.g. 8,4,2")
    run.add_argument(
        "--eval",
        help="comma-separated protocols from knn, linear, finetune (default knn,linear); finetune fine-tunes "
        "the whole network, selects the epoch on validation and scores test once",
    )
    run.add_argument(
        "--finetune-mode",
        choices=("auto", "plain", "progressive"),
        help="auto (default): PMG progressive fine-tune for fgssl, plain cross-entropy for the rest; "
        "progressive: PMG for every method (new heads on layer2/3/4 for non-FG-SSL backbones)",
    )
    run.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (protocol finetune)")
    run.add_argument(
        "--weights",
        metavar="PATH",
        help="local torchvision-format state dict the backbone starts from, for any method (never downloaded); "
        "with random_init this is the ImageNet reference",
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training device (default: auto)")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. optim.weight_decay=1e-4"
    )
    run.add_argument("--force", action="store_true", help="rerun configurations that already FINISHED")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="parallel worker processes over the sweep (default 1); each claims a configuration through the "
        "store's per-configuration lock, so none runs twice; torch threads are split between workers",
    )
    run.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="training processes per run (torchrun + DDP on this machine; each trains on batch_size/N images "
        "of the global batch; rank 0 logs and checkpoints); BatchNorm is synchronised across them unless "
        "train.sync_batchnorm=false",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    _add_tracking_args(run)
    run.set_defaults(handler=_run)


def _add_tune_parser(sub) -> None:
    tune = sub.add_parser("tune", help="Optuna search over a method's main hyperparameters")
    tune.add_argument("--method", required=True, help="simclr, byol, barlow or fgssl")
    tune.add_argument("--dataset", default="synthetic")
    tune.add_argument("--data-root", help="folder with the dataset in its official layout")
    tune.add_argument("--trials", type=int, default=20)
    tune.add_argument("--storage", help="Optuna storage URL (default: a journal file beside the MLflow store)")
    tune.add_argument("--study", help="study name (default: tune-<method>-<dataset>)")
    tune.add_argument(
        "--sampler-seed",
        type=int,
        default=0,
        help="seed of the TPE sampler; workers sharing one study need different seeds, or they propose the same trials",
    )
    tune.add_argument("--preset", default="cpu", choices=PRESETS)
    tune.add_argument("--config", help="YAML file with config sections (overrides the preset)")
    tune.add_argument("--epochs", type=int, help="SSL pretraining epochs per trial")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any config key")
    tune.add_argument("--no-progress", action="store_true")
    _add_tracking_args(tune)
    tune.set_defaults(handler=_tune)


def _add_report_parser(sub) -> None:
    report = sub.add_parser("report", help="tables, statistics, plots and a PDF from MLflow runs")
    report.add_argument("--experiment", nargs="+", help="experiment name(s) (default: every experiment)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    report.add_argument("--out", default="report.pdf", help="PDF path; tables go to <stem>_tables/ beside it")
    report.add_argument("--formats", default="pdf,md,csv,tex", help="comma-separated subset of pdf,md,csv,tex")
    report.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
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


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="check, prepare (decode once) or download a dataset")
    actions = data.add_subparsers(dest="action", required=True)
    for action, text in (
        ("check", "validate files and labels; print split sizes and class counts"),
        ("prepare", "decode and cache every split ahead of training"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("name", help="dataset name: synthetic, isic2017, isic2018, aptos2019")
        parser.add_argument("--root", help="folder with the dataset in its official layout")
        parser.add_argument("--task", help="dataset task (default: the dataset's first)")
        parser.add_argument("--size", type=int, default=64, help="decoded image size in pixels (default 64)")
        parser.add_argument("--cache-dir", help="where decoded images are cached")
        parser.set_defaults(handler=_data_check if action == "check" else _data_prepare)
    download = actions.add_parser("download", help="fetch the official archives (resumable, verified)")
    download.add_argument("name", help="isic2017 or isic2018 (aptos2019 explains the Kaggle step)")
    download.add_argument("--root", required=True, help="folder to unpack the official layout into")
    download.add_argument("--base-url", help="mirror of the official archive host")
    download.set_defaults(handler=_data_download)


def _add_ui_parser(sub) -> None:
    ui = sub.add_parser("ui", help="open the MLflow UI on the harness's store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(handler=_ui)


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config tree implied by CLI flags (only the flags the user gave)."""
    tree: dict[str, Any] = {}
    flags = {
        "methods": ("methods",),
        "datasets": ("datasets",),
        "batch_sizes": ("batch_sizes",),
        "seeds": ("seeds",),
        "data_root": ("data", "root"),
        "task": ("data", "task"),
        "cache_dir": ("data", "cache_dir"),
        "epochs": ("train", "epochs"),
        "image_size": ("data", "image_size"),
        "lr": ("optim", "lr"),
        "device": ("device",),
        "finetune_mode": ("eval", "finetune_mode"),
        "finetune_epochs": ("eval", "finetune_epochs"),
        "weights": ("model", "weights"),
    }
    for attr, path in flags.items():
        value = getattr(args, attr)
        if value is not None:
            _set_path(tree, path, _split_commas(value) if attr == "methods" or attr == "datasets" else value)
    if args.jigsaw_grids:
        _set_path(tree, ("method_options", "fgssl", "grids"), _int_list(args.jigsaw_grids, "--jigsaw-grids"))
    fgssl_flags = {
        "levels": _int_list(args.fgssl_levels, "--fgssl-levels") if args.fgssl_levels else None,
        "concat": {"yes": True, "no": False}.get(args.fgssl_concat),
        "schedule": args.fgssl_schedule,
        "embed_dim": args.embed_dim,
        "bt_variant": args.bt_variant,
        "per_batch_permutation": True if args.per_batch_permutation else None,
    }
    for key, value in fgssl_flags.items():
        if value is not None:
            _set_path(tree, ("method_options", "fgssl", key), value)
    if args.bt_variant:
        _set_path(tree, ("method_options", "barlow", "bt_variant"), args.bt_variant)
    if args.ablation:
        tree["ablation"] = args.ablation
    if args.ablation_variants:
        tree["ablation_variants"] = _split_commas([args.ablation_variants])
    if args.eval:
        _set_path(tree, ("eval", "protocols"), args.eval.split(","))
    _apply_sets(tree, args.set)
    return tree


def _apply_sets(tree: dict[str, Any], items: list[str]) -> None:
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--set expects KEY=VALUE, got {item!r}")
        _set_path(tree, tuple(key.split(".")), yaml.safe_load(raw))


def _preset_and_config(args: argparse.Namespace) -> dict[str, Any]:
    """The preset, overridden by the ``--config`` file when one is given."""
    tree = load_preset(args.preset)
    return deep_merge(tree, read_yaml(args.config)) if args.config else tree


def _state_dir(uri: str) -> Path:
    """Where locks, checkpoints and the Optuna journal live: beside a local store, else ./.bench-state."""
    return local_store_dir(uri) or Path(".bench-state")


def resolve_tree(args: argparse.Namespace) -> dict[str, Any]:
    """Preset < config file < command line; the command line also wins over a study's ``parts``, and
    an optimizer value it gives (``--lr``) over the per-method values of the preset or file."""
    tree, overrides = _preset_and_config(args), cli_overrides(args)
    given = set(overrides.get("optim") or {})
    tree = without_method_optim(tree, given)
    if isinstance(tree.get("parts"), list):
        tree["parts"] = [
            deep_merge(without_method_optim(part, given), overrides) if isinstance(part, dict) else part
            for part in tree["parts"]
        ]
    return deep_merge(tree, overrides)


def without_method_optim(tree: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    """``tree`` without ``keys`` in its per-method optimizer overrides (``method_optim``), so that a
    value meant for every method (``--lr``) reaches the methods a preset gives their own."""
    per_method = tree.get("method_optim")
    if not keys or not isinstance(per_method, dict):
        return tree
    kept = {
        method: {k: v for k, v in values.items() if k not in keys} if isinstance(values, dict) else values
        for method, values in per_method.items()
    }
    return {**tree, "method_optim": kept}


def _run(args: argparse.Namespace) -> int:
    from bench.sweep import expand

    if args.workers < 1:
        raise BenchError(f"--workers must be at least 1, got {args.workers}")
    if args.nproc < 1:
        raise BenchError(f"--nproc must be at least 1, got {args.nproc}")
    if args.nproc > 1 and args.workers > 1:
        raise BenchError("--nproc and --workers cannot be combined: use one to split each run, the other the sweep")
    if under_torchrun():
        return _run_as_rank(args)
    if args.nproc > 1:
        # Every bad input is refused here, once, before any process starts (exit 2, one line).
        tree = resolve_tree(args)
        for config in expand(tree):
            if config.train.batch_size % args.nproc:
                raise BenchError(
                    f"batch size {config.train.batch_size} does not split evenly over --nproc {args.nproc}"
                )
        check_store(args.tracking_uri or default_tracking_uri())
        argv = without_option(args.argv, "--nproc")
        if "sync_batchnorm" not in (tree.get("train") or {}):
            # Unless told otherwise, N processes train like one with the global batch: BatchNorm
            # statistics over the global batch too.
            argv += ["--set", "train.sync_batchnorm=true"]
        return launch(args.nproc, argv)
    return _run_sweep_on_rank_zero(args, None)


def _run_sweep_on_rank_zero(args: argparse.Namespace, ctx: DistributedContext | None) -> int:
    """The sweep, its output and exit code: in the ``bench run`` process, or on rank 0 of ``--nproc``."""
    from bench.sweep import expand
    from bench.workers import run_sweep

    tracker = Tracker(args.tracking_uri or default_tracking_uri(), args.experiment)
    check_store(tracker.uri)
    configs = expand(resolve_tree(args))
    ledger = Ledger(_state_dir(tracker.uri))
    workers = min(args.workers, len(configs))
    print(
        f"bench: {len(configs)} run(s) -> experiment {tracker.experiment!r} at {tracker.uri}"
        + (f" ({workers} worker processes)" if workers > 1 else ""),
        file=sys.stderr,
    )
    outcomes = run_sweep(configs, tracker, ledger, workers, force=args.force, progress=not args.no_progress, ctx=ctx)
    _print_summary(outcomes)
    counts = Counter(o.status for o in outcomes)
    print(f"\n{len(outcomes)} run(s): " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())))
    skipped = counts["SKIPPED"]
    if skipped:
        print(f"{skipped} of {len(outcomes)} run(s) skipped (finished already or running elsewhere; --force reruns)")
    print(f"\nOpen the results: bench ui --tracking-uri '{tracker.uri}'  (then http://127.0.0.1:5000)")
    return 0 if all(o.status in ("FINISHED", "SKIPPED") for o in outcomes) else 1


def _run_as_rank(args: argparse.Namespace) -> int:
    """``bench run`` as one of the processes ``--nproc`` (or a user's ``torchrun -m bench run``) started:
    rank 0 runs the sweep as a single process would, training each SSL run together with the other
    ranks; the other ranks only train, and print nothing but errors."""
    from bench.devices import resolve_device
    from bench.run import follow_rank_zero

    ctx = init_from_env(resolve_device(resolve_tree(args).get("device", "auto")), timeout=COMMAND_LINE_TIMEOUT)
    try:
        if not ctx.is_main:
            follow_rank_zero(ctx)
            return 0
        code = _run_sweep_on_rank_zero(args, ctx)
        end_followers(ctx)  # only after a sweep that ended normally; after a crash torchrun stops every rank
        return code
    finally:
        shutdown()


def _tune(args: argparse.Namespace) -> int:
    import optuna

    from bench.tune import OBJECTIVE, check_request, open_study, tune

    check_request(args.method, args.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tracker = Tracker(args.tracking_uri or default_tracking_uri(), args.experiment)
    check_store(tracker.uri)
    overrides: dict[str, Any] = {}
    if args.data_root:
        _set_path(overrides, ("data", "root"), args.data_root)
    if args.epochs is not None:
        _set_path(overrides, ("train", "epochs"), args.epochs)
    _apply_sets(overrides, args.set)
    tree = deep_merge(_preset_and_config(args), overrides)
    state = _state_dir(tracker.uri)
    study = open_study(args.study or f"tune-{args.method}-{args.dataset}", args.storage, state, args.sampler_seed)
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
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)))
    for o in outcomes:
        if o.note:
            print(f"{o.name}: {o.note}")


def _data_request(args: argparse.Namespace) -> DataRequest:
    return DataRequest(
        image_size=args.size,
        root=Path(args.root) if args.root else None,
        task=args.task,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )


def _data_check(args: argparse.Namespace) -> int:
    try:
        report = check_dataset(args.name, _data_request(args))
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    print(report.format())
    return 0 if report.ok else EXIT_USAGE


def _data_prepare(args: argparse.Namespace) -> int:
    try:
        dataset = load_dataset(args.name, _data_request(args))
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    sizes = ", ".join(f"{name} {len(split)}" for name, split in dataset.splits().items())
    print(f"{dataset.name} ({dataset.task}) decoded at {dataset.image_size} px: {sizes}")
    return 0


def _data_download(args: argparse.Namespace) -> int:
    from datasets.download import download_dataset

    try:
        summary = download_dataset(args.name, Path(args.root), base_url=args.base_url)
    except DatasetError as exc:
        raise BenchError(str(exc)) from None
    print(summary)
    return 0


def _ui(args: argparse.Namespace) -> int:
    uri = args.tracking_uri or default_tracking_uri()
    require_existing_store(uri)
    check_port_free(args.host, args.port)
    base_url = f"http://{args.host}:{args.port}"
    print(f"MLflow UI for {uri} at {base_url}  (Ctrl-C to stop); runs tables:", flush=True)
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


def _set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _split_commas(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise BenchError(f"{flag} expects comma-separated integers, got {text!r}") from None
