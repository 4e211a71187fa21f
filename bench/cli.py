"""The ``bench`` command line: the parser, and the config tree its flags imply; the commands it
dispatches to live in bench/commands.py.

Nothing heavy is imported before the arguments are parsed: ``--help`` and a mistyped flag answer at
once, without loading torch, MLflow or scikit-learn (tests/test_cli.py checks the imports)."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from bench.errors import EXIT_USAGE, BenchError
from bench.preset_files import PRESETS


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # what ``--nproc`` re-runs under torchrun
    try:
        if args.command == "run":
            args.overrides = cli_overrides(args)
        handler = getattr(importlib.import_module("bench.commands"), args.handler)
        return handler(args)
    except BenchError as exc:
        # A value quoted in the message may hold line breaks or other control characters: escape them.
        one_line = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(exc))
        print(f"bench: error: {one_line}", file=sys.stderr)
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
    _add_compare_parser(sub)
    _add_reproduce_parser(sub)
    _add_data_parser(sub)
    _add_ui_parser(sub)
    return parser


def _add_tracking_args(parser: argparse.ArgumentParser, default_experiment: str) -> None:
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    parser.add_argument("--experiment", help=f"MLflow experiment name for every run (default: {default_experiment})")


# Measured, not estimated (README, "Run"): keep the two in step when a preset changes.
RUN_MINUTES = """minutes per run (SimCLR, one seed, one torch thread; FG-SSL takes about 4x as long):

  preset  synthetic  isic2017
  smoke   0.2        0.3
  cpu     8.2        3.3 at 8 epochs without colour jitter (recorded: docs/results/isic2017-cpu)

CPU time of the whole bench run on a 2-core machine (2026-11-29), about its wall time on an idle
core; the cpu preset's 20 epochs on isic2017 were not timed. Each dataset's runs go to an MLflow
experiment named after it unless --experiment or --config names one."""


def _add_run_parser(sub) -> None:
    run = sub.add_parser(
        "run",
        help="pretrain and evaluate every combination of the sweep axes",
        epilog=RUN_MINUTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument(
        "--methods",
        nargs="+",
        help="method names (see docs/methods.md), composites X+fgssl, the named sets all (every single method) and "
        "paper (the paper's comparison), or the references random_init (untrained; with --weights: the ImageNet "
        "reference) and supervised (cross-entropy on the train labels for the run's epochs)",
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
    run.add_argument("--ablation", help="run a method once per variant of its named ablation, e.g. hierarchy (FG-SSL)")
    run.add_argument("--ablation-variants", metavar="A,B", help="only these variants of --ablation (default: all)")
    run.add_argument(
        "--jigsaw-grids", help="tiles per side for levels 1-3, finest first (e.g. 8,4,2), for every jigsaw method"
    )
    run.add_argument(
        "--eval",
        help="comma-separated protocols from knn, linear, finetune (default knn,linear); finetune fine-tunes "
        "the whole network, selects the epoch on validation and scores test once",
    )
    run.add_argument(
        "--finetune-mode",
        choices=("auto", "plain", "progressive"),
        help="auto (default): PMG progressive fine-tune for methods with a hierarchy (FG-SSL), plain "
        "cross-entropy for the rest; "
        "progressive: PMG for every method (new heads on layer2/3/4 for non-FG-SSL backbones)",
    )
    run.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (protocol finetune)")
    run.add_argument(
        "--weights",
        metavar="PATH|imagenet|imagenet-v2",
        help="what the backbone starts from, for any method: a local torchvision-format state dict, or "
        "torchvision's ImageNet weights (imagenet: IMAGENET1K_V1, as the paper; imagenet-v2: IMAGENET1K_V2), "
        "downloaded once into torch's hub cache ($TORCH_HOME/hub/checkpoints); the file's sha256 identifies "
        "the run. With random_init this is the ImageNet reference",
    )
    run.add_argument("--device", choices=("auto", "cpu", "cuda"), help="training device (default: auto)")
    run.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. optim.weight_decay=1e-4"
    )
    run.add_argument("--force", action="store_true", help="rerun configurations that already FINISHED")
    run.add_argument(
        "--dry-run", action="store_true", help="check every value, list the runs the sweep would start, write nothing"
    )
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
    run.add_argument(
        "--threads",
        type=int,
        help="torch threads for the sweep, split between --workers (default: OMP_NUM_THREADS if set, else the "
        "cores that are free now: on a busy machine fewer threads run faster)",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    _add_ray_args(run)
    _add_tracking_args(run, "the --config file's name without .yaml, else one experiment per dataset, named after it")
    run.set_defaults(handler="run")


def _add_ray_args(parser: argparse.ArgumentParser) -> None:
    """Running on a Ray cluster (docs/cluster.md); needs the ``ray`` extra."""
    parser.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the sweep's configurations as Ray tasks: auto (the cluster started here with `ray start`), "
        "local (a one-machine cluster) or HOST:PORT of the head node",
    )
    parser.add_argument("--cpus-per-run", type=float, default=1.0, help="CPUs each run reserves on --ray (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, help="GPUs each run reserves on --ray (default 0)")
    parser.add_argument(
        "--state-dir",
        help="checkpoints folder; with --ray it must be on storage every node reads and writes "
        "(default: beside a local store, else ./.bench-state)",
    )


def _add_tune_parser(sub) -> None:
    tune = sub.add_parser("tune", help="Optuna search over a method's main hyperparameters")
    tune.add_argument("--method", required=True, help="a method name, as for bench run --methods")
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
    _add_ray_args(tune)
    _add_tracking_args(tune, "the dataset's name, as for bench run")
    tune.set_defaults(handler="tune")


def _add_report_parser(sub) -> None:
    report = sub.add_parser("report", help="tables, statistics, plots and a PDF from MLflow runs")
    report.add_argument("--experiment", nargs="+", help="experiment name(s) (default: every experiment)")
    report.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    report.add_argument("--out", default="report.pdf", help="PDF path; tables go to <stem>_tables/ beside it")
    report.add_argument("--formats", default="pdf,md,csv,tex", help="comma-separated subset of pdf,md,csv,tex")
    report.set_defaults(handler="report")


def _add_compare_parser(sub) -> None:
    compare = sub.add_parser(
        "compare", help="the methods side by side in the terminal: mean and 95%% interval, with the baselines"
    )
    compare.add_argument("--experiment", nargs="+", help="experiment name(s) (default: every experiment)")
    compare.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    compare.set_defaults(handler="compare")


def _add_reproduce_parser(sub) -> None:
    reproduce = sub.add_parser(
        "reproduce",
        help="the paper's protocol for one dataset (SSL pretraining, progressive fine-tune with AugMix and CutMix, "
        "selection on validation) through bench run, then DIR/reproduce.md beside the paper's figures",
    )
    reproduce.add_argument("dataset", help="isic2017, isic2018, aptos2019 or synthetic")
    reproduce.add_argument(
        "--scale",
        required=True,
        choices=("paper", "cpu", "smoke"),
        help="paper: the full protocol for a GPU (ResNet-50, ImageNet weights, 224 px); cpu and smoke: the same "
        "pipeline shrunk (ResNet-18 from scratch, small images, few epochs), not comparable to the paper",
    )
    reproduce.add_argument("--data-root", help="folder with the dataset in its official layout")
    reproduce.add_argument("--cache-dir", help="where decoded images are cached")
    reproduce.add_argument(
        "--out", help="folder for reproduce.md and the report's tables (default: reproduce-DATASET-SCALE)"
    )
    reproduce.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the scale's, bench/scales.yaml)")
    reproduce.add_argument(
        "--methods", nargs="+", help="only these of the scale's methods or others (default: the scale's)"
    )
    reproduce.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="any config key, e.g. data.task=sk"
    )
    reproduce.add_argument("--workers", type=int, default=1, help="parallel worker processes, as for bench run")
    reproduce.add_argument("--dry-run", action="store_true", help="list the runs it would start; write nothing")
    reproduce.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. in logs)")
    reproduce.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    reproduce.add_argument("--experiment", help="MLflow experiment name (default: reproduce-DATASET-SCALE)")
    reproduce.set_defaults(handler="reproduce")


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
        parser.set_defaults(handler="data_check" if action == "check" else "data_prepare")
    download = actions.add_parser("download", help="fetch the official archives (resumable, verified)")
    download.add_argument("name", help="isic2017 or isic2018 (aptos2019 explains the Kaggle step)")
    download.add_argument("--root", required=True, help="folder to unpack the official layout into")
    download.add_argument("--base-url", help="mirror of the official archive host")
    download.set_defaults(handler="data_download")


def _add_ui_parser(sub) -> None:
    ui = sub.add_parser("ui", help="open the MLflow UI on the harness's store")
    ui.add_argument("--tracking-uri", help="MLflow tracking URI (default: SQLite store in ./mlruns)")
    ui.add_argument("--port", type=int, default=5000)
    ui.add_argument("--host", default="127.0.0.1")
    ui.set_defaults(handler="ui")


def cli_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config tree implied by CLI flags (only the flags the user gave)."""
    from bench.resolve import apply_sets, set_path

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
            set_path(tree, path, _split_commas(value) if attr == "methods" or attr == "datasets" else value)
    if args.jigsaw_grids:
        tree["jigsaw_grids"] = _int_list(args.jigsaw_grids, "--jigsaw-grids")
    if args.ablation:
        tree["ablation"] = args.ablation
    if args.ablation_variants:
        tree["ablation_variants"] = _split_commas([args.ablation_variants])
    if args.eval:
        set_path(tree, ("eval", "protocols"), args.eval.split(","))
    apply_sets(tree, args.set)
    return tree


def run_tree(args: argparse.Namespace) -> dict[str, Any]:
    """The sweep ``bench run`` was asked for: preset < ``--config`` file < its flags."""
    from bench.resolve import resolve_tree

    return resolve_tree(args.preset, args.config, cli_overrides(args))


def _split_commas(values: list[str]) -> list[str]:
    return [part for value in values for part in value.split(",") if part]


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise BenchError(f"{flag} expects comma-separated integers, got {text!r}") from None
