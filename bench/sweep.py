"""Expand the sweep axes (methods x datasets x batch sizes x seeds) into validated run configs.

A study file may hold several sweeps as ``parts``: each part is merged over the rest of the file,
expanded on its own, and the union runs once per configuration (e.g. a batch-size sweep, extra
seeds at one batch size and an ablation, in one file and one store).
"""

from __future__ import annotations

import itertools
from typing import Any

from bench.ablation import ablation_method, ablation_variants
from bench.errors import BenchError
from bench.names import match_name
from bench.references import REFERENCES
from bench.resolve import build_run_config, coerce, deep_merge
from bench.run import check_fits_data
from bench.schema import RunConfig
from datasets import DATASETS
from methods import METHOD_SETS, METHODS, get_method


def expand_methods(names: list[str]) -> list[str]:
    """Named sets (``all``: every single SSL method, ``paper``: the paper's comparison) expanded; the
    references (``random_init``, ``supervised``) are asked for by name."""
    valid = [*METHOD_SETS, *METHODS, *REFERENCES]
    expanded: list[str] = []
    for given in names:
        name = given if "+" in given and _composable(given) else match_name(given, valid, "method")
        for item in METHOD_SETS.get(name, [name]):
            if item not in expanded:
                expanded.append(item)
    return expanded


def _composable(name: str) -> bool:
    """A composite the registry builds on demand (``X+fgssl`` for any one-step X)."""
    try:
        get_method(name)
    except ValueError:
        return False
    return True


def expand(tree: dict[str, Any]) -> list[RunConfig]:
    """All runs of a sweep or study, validated up front so that a bad value fails before anything is logged."""
    if "parts" not in tree:
        return _expand_sweep(tree)
    parts = tree["parts"]
    if not isinstance(parts, list) or not parts or not all(isinstance(part, dict) for part in parts):
        raise BenchError(f"'parts' must be a non-empty list of sweep sections, got {parts!r}")
    common = {key: value for key, value in tree.items() if key != "parts"}
    configs: dict[str, RunConfig] = {}
    for part in parts:
        if "parts" in part:
            raise BenchError("a part cannot hold 'parts' of its own")
        for config in _expand_sweep(deep_merge(common, part)):
            configs.setdefault(config.config_hash(), config)
    return list(configs.values())


def _expand_sweep(tree: dict[str, Any]) -> list[RunConfig]:
    """The sweep's cross product; a point given twice (``--seeds 0 0``) runs once."""
    methods = expand_methods(_names(tree, "methods", ["all"]))
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    datasets = _names(tree, "datasets", [data.get("name", "synthetic")])
    datasets = [match_name(name, DATASETS, "dataset") for name in datasets]
    train = tree.get("train") if isinstance(tree.get("train"), dict) else {}
    batch_sizes = [coerce("batch_sizes", b, int) for b in _axis(tree, "batch_sizes", [train.get("batch_size", 64)])]
    seeds = [coerce("seeds", s, int) for s in _axis(tree, "seeds", [train.get("seed", 0)])]
    if tree.get("ablation_variants") and not tree.get("ablation"):
        raise BenchError("ablation_variants (--ablation-variants) needs an ablation (--ablation NAME)")
    if tree.get("ablation"):
        configs = _ablation_configs(tree, datasets, batch_sizes, seeds)
    else:
        configs = [
            build_run_config(tree, method, dataset, batch_size, seed)
            for dataset, batch_size, seed, method in itertools.product(datasets, batch_sizes, seeds, methods)
        ]
    unique = list({config.config_hash(): config for config in configs}.values())
    for config in unique:
        check_fits_data(config)
    return unique


def _ablation_configs(tree: dict[str, Any], datasets: list[str], batch_sizes: list[int], seeds: list[int]):
    """The ablation's method once per variant; variants that resolve to the same config run once."""
    if not isinstance(tree["ablation"], str):
        raise BenchError(f"ablation must be a name, got {tree['ablation']!r}")
    data = tree.get("data") if isinstance(tree.get("data"), dict) else {}
    image_size = coerce("data.image_size", data.get("image_size", 64), int)
    configs: dict[str, RunConfig] = {}
    method = ablation_method(tree["ablation"]).name
    variants = ablation_variants(tree["ablation"], image_size)
    chosen = _names(tree, "ablation_variants", list(variants)) if tree.get("ablation_variants") else list(variants)
    unknown = [name for name in chosen if name not in variants]
    if unknown:
        raise BenchError(
            f"unknown {tree['ablation']} variant(s) {', '.join(map(str, unknown))}; valid: {', '.join(variants)}"
        )
    for variant in chosen:
        options = variants[variant]
        variant_tree = deep_merge(tree, {"method_options": {method: options}})
        for dataset, batch_size, seed in itertools.product(datasets, batch_sizes, seeds):
            config = build_run_config(variant_tree, method, dataset, batch_size, seed, ablation=variant)
            configs.setdefault(config.config_hash(), config)
    return list(configs.values())


def _names(tree: dict[str, Any], key: str, default: list) -> list[str]:
    values = _axis(tree, key, default)
    bad = [v for v in values if not isinstance(v, str)]
    if bad:
        raise BenchError(f"sweep axis {key!r} takes names, got {bad[0]!r}")
    return values


def _axis(tree: dict[str, Any], key: str, default: list) -> list:
    values = tree.get(key, default)
    if not isinstance(values, (list, tuple)) or not values:
        raise BenchError(f"sweep axis {key!r} must be a non-empty list, got {values!r}")
    return list(values)
