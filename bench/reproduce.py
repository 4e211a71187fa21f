"""``bench reproduce DATASET --scale paper|cpu|smoke``: the paper's protocol for one dataset in one command.

Nothing here trains or scores. The sweep is read from bench/scales.yaml (the preset of the scale's name, the
scale's methods and seeds, the progressive fine-tune with CutMix, AugMix where the authors used it) and run
by ``bench run``'s own handler (``bench.commands.run``: validation, the store's locks, resumption, workers);
the runs of exactly that sweep are then analysed by the report's code (``reports.build``) and written as
``DIR/reproduce.md`` beside the paper's figures (``reports.reproduce``), with the report's tables in
``DIR/report_tables/``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.tracking import MlflowClient

from bench import commands
from bench.errors import BenchError
from bench.names import match_name
from bench.references import REFERENCES
from bench.resolve import apply_sets, deep_merge, read_yaml, resolve_tree, set_path
from bench.schema import RunConfig
from bench.tracking import default_tracking_uri
from datasets import DATASETS, get_dataset_spec
from methods import get_method
from reports.build import analyse_runs, write_report
from reports.collect import experiment_ids, load_runs, test_report
from reports.reproduce import Protocol, paper_figures, reproduce_markdown

SCALES_FILE = Path(__file__).with_name("scales.yaml")
PAGE = "reproduce.md"


def run_reproduce(args: argparse.Namespace) -> int:
    """Run the scale's sweep (skipping configurations already FINISHED in the store), then write the page;
    exit 1 if a run did not finish (the page lists it), 128+N if a signal stopped the sweep (no page)."""
    dataset = match_name(args.dataset, DATASETS, "dataset")
    overrides = scale_overrides(dataset, args.scale, args)
    out = Path(args.out or f"reproduce-{dataset}-{args.scale}")
    check_out_dir(out)
    run_args = argparse.Namespace(
        preset=args.scale,
        config=None,
        overrides=overrides,
        workers=args.workers,
        nproc=1,
        threads=None,
        dry_run=args.dry_run,
        experiment=args.experiment or f"reproduce-{dataset}-{args.scale}",
        tracking_uri=args.tracking_uri or default_tracking_uri(),
        force=False,
        no_progress=args.no_progress,
        argv=[],
        ray=None,  # one machine; a cluster runs the same sweep with bench run --config and --ray
        cpus_per_run=1.0,
        gpus_per_run=0.0,
        state_dir=None,
    )
    code = commands.run(run_args)
    if args.dry_run:
        print(f"then {out / PAGE} (nothing was written: --dry-run)")
        return code
    if code >= 128:
        return code
    configs = sweep_configs(args.scale, overrides)
    page = write_page(run_args.tracking_uri, run_args.experiment, configs, args.scale, out)
    print(f"\nThe runs beside the paper's figures: {page}", file=sys.stderr)
    return code


def scale_overrides(dataset: str, scale: str, args: argparse.Namespace) -> dict[str, Any]:
    """The sweep over the scale's preset: bench/scales.yaml's protocol and scale entry, the dataset's
    AugMix, then what the command line gave (``--seeds``, ``--methods``, ``--set``, data folders)."""
    spec = read_yaml(SCALES_FILE)
    scales = spec["scales"]
    if scale not in scales:
        raise BenchError(f"unknown scale {scale!r}; valid: {', '.join(scales)}")
    tree = deep_merge(spec["protocol"], scales[scale])
    tree = deep_merge(
        tree, {"datasets": [dataset], "eval": {"finetune_augmix": bool(spec["augmix"].get(dataset, False))}}
    )
    if args.seeds:
        tree["seeds"] = list(args.seeds)
    if args.methods:
        tree["methods"] = [name for given in args.methods for name in given.split(",") if name]
    if args.data_root:
        set_path(tree, ("data", "root"), args.data_root)
    if args.cache_dir:
        set_path(tree, ("data", "cache_dir"), args.cache_dir)
    apply_sets(tree, args.set)
    return tree


def sweep_configs(scale: str, overrides: dict[str, Any]) -> list[RunConfig]:
    """The run configs of the sweep, as ``bench run`` expanded them (the same hashes)."""
    from bench.sweep import expand

    return expand(resolve_tree(scale, None, overrides))


def check_out_dir(out: Path) -> None:
    """``--out`` must be a folder that exists or can be created: refused before any run starts."""
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out} is a file, not a folder")
    existing = next(p for p in (out.absolute(), *out.absolute().parents) if p.exists())
    try:
        if not existing.is_dir():
            raise OSError
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError:
        raise BenchError(f"--out {out} cannot be written ({existing} is not a writable folder)") from None


def write_page(uri: str, experiment: str, configs: list[RunConfig], scale: str, out: Path) -> Path:
    """``out/reproduce.md`` and the report's tables (``out/report_tables/``) from the sweep's runs in the store."""
    client = MlflowClient(tracking_uri=uri)
    try:
        runs = load_runs(client, experiment_ids(client, [experiment]))
    except ValueError as exc:
        raise BenchError(str(exc)) from None
    runs = runs[runs["config_hash"].isin({c.config_hash() for c in configs})]
    if runs.empty:
        raise BenchError(f"no run of this sweep is in experiment {experiment!r} at {uri}")
    # One sweep: one dataset setting, one option set per method, whatever else the experiment holds.
    runs = runs.assign(setting=runs["dataset"], variant="").reset_index(drop=True)
    data = analyse_runs(runs, lambda run_id, protocol: test_report(client, run_id, protocol))
    text = reproduce_markdown(data, paper_figures(configs[0].data.name), protocol_of(configs, runs, scale))
    out.mkdir(parents=True, exist_ok=True)
    page = out / PAGE
    page.write_text(text, encoding="utf-8")
    write_report(data, out / "report.pdf", ("md", "csv"), client, uri)
    return page


def protocol_of(configs: list[RunConfig], runs: pd.DataFrame, scale: str) -> Protocol:
    """What the page says the runs did, from their configs (they share everything but the method)."""
    config = configs[0]
    spec = get_dataset_spec(config.data.name)
    logged = [task for task in runs["task"] if task]
    composites = any(get_method(c.method).parts for c in configs if c.method not in REFERENCES)
    return Protocol(
        dataset=config.data.name,
        title=spec.title or spec.name,
        task=logged[0] if logged else config.data.task or spec.default_task,
        scale=scale,
        backbone=config.model.backbone.replace("resnet", "ResNet-"),
        image_size=config.data.image_size,
        ssl_epochs=config.train.epochs,
        batch_size=config.train.batch_size,
        finetune_epochs=config.eval.finetune_epochs,
        train_limit=config.data.train_limit,
        augmix=config.eval.finetune_augmix,
        cutmix_alpha=config.eval.finetune_cutmix_alpha,
        weights=config.model.weights,
        weights_sha256=config.model.weights_sha256,
        composites=composites,
    )
