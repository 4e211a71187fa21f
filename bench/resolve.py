"""Config resolution, in one place: preset < ``--config`` file < command line, into typed run configs.

A sweep's tree (sections, sweep axes, per-method options) is merged here and each point of the sweep
becomes a ``RunConfig`` whose values are typed and range-checked (bench/validation.py) before any run
exists. Method options are resolved by the method itself (``SSLMethod.resolve_options``), so nothing
here knows a method by name.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError
from bench.imagenet import fetch, is_named, named_weights
from bench.preset_files import PRESET_DIR, PRESETS
from bench.references import REFERENCES
from bench.schema import FINETUNE_MODES, SECTIONS, EvalConfig, ModelConfig, RunConfig
from bench.validation import validate
from bench.weights import file_sha256
from datasets import DatasetError, get_dataset_spec
from methods import METHODS, get_method

SWEEP_KEYS = ("methods", "datasets", "batch_sizes", "seeds")
# ``jigsaw_grids``: the grids of every jigsaw method in the sweep (``--jigsaw-grids``; it wins over
# the methods' own options).
OTHER_KEYS = ("method_options", "method_optim", "device", "ablation", "ablation_variants", "jigsaw_grids")


def load_preset(name: str) -> dict[str, Any]:
    if name not in PRESETS:
        raise BenchError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return read_yaml(PRESET_DIR / f"{name}.yaml")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, turning syntax errors into a message with the file and line."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise BenchError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        content = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise BenchError(f"malformed YAML in {path}{where}: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(content, dict):
        raise BenchError(f"config file {path} must hold a mapping of sections, got {type(content).__name__}")
    return content


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def set_path(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for depth, key in enumerate(path[:-1]):
        tree = tree.setdefault(key, {})
        if not isinstance(tree, dict):
            raise BenchError(f"{'.'.join(path[: depth + 1])} is set to a value, so {'.'.join(path)} cannot be set")
    tree[path[-1]] = value


def apply_sets(tree: dict[str, Any], items: list[str]) -> None:
    """``--set a.b=VALUE`` items (VALUE read as YAML) into ``tree``."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise BenchError(f"--set expects KEY=VALUE, got {item!r}")
        set_path(tree, tuple(key.split(".")), yaml.safe_load(raw))


def resolve_tree(preset: str, config_file: str | None, overrides: dict[str, Any]) -> dict[str, Any]:
    """Preset < config file < command line; the command line also wins over a study's ``parts``, and
    an optimizer value it gives (``--lr``) over the per-method values of the preset or file."""
    tree = load_preset(preset)
    if config_file:
        tree = deep_merge(tree, read_yaml(Path(config_file)))
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


def build_run_config(
    tree: dict[str, Any], method: str, dataset: str, batch_size: int, seed: int, ablation: str | None = None
) -> RunConfig:
    """One run's typed config from the merged tree and its point in the sweep (``ablation`` labels
    an ablation variant whose options are already merged into the tree)."""
    unknown = sorted(set(tree) - set(SECTIONS) - set(SWEEP_KEYS) - set(OTHER_KEYS))
    if unknown:
        valid = ", ".join([*SECTIONS, *SWEEP_KEYS, *OTHER_KEYS])
        raise BenchError(f"unknown config section(s) {', '.join(unknown)}; valid: {valid}")
    for section in ("method_options", "method_optim"):
        _check_method_names(_mapping(tree.get(section), section), section)
    point = {"data": {"name": dataset}, "train": {"batch_size": batch_size, "seed": seed}}
    tree = deep_merge(tree, deep_merge(point, {"optim": _per_method(tree, "method_optim", method, first_part=True)}))
    sections = {name: _build_section(name, cls, tree.get(name) or {}) for name, cls in SECTIONS.items()}
    given = _per_method(tree, "method_options", method)
    facts = _dataset_facts(dataset, sections["data"].image_size)
    options = resolve_method_options(method, given, facts, tree.get("jigsaw_grids"))
    sections["eval"] = resolve_finetune(sections["eval"], method, facts, options)
    config = RunConfig(
        method=method, method_options=options, device=tree.get("device", "auto"), ablation=ablation, **sections
    )
    validate(config)  # before the weights: no download for a config that is refused anyway
    return dataclasses.replace(config, model=resolve_weights(config.model))


def _per_method(tree: dict[str, Any], section: str, method: str, first_part: bool = False) -> dict[str, Any]:
    """A method's entry of ``method_options`` or ``method_optim``. A composite (``X+fgssl``) starts from its
    parts' entries (options: each part's under its name; optimizer: the first part's, whose backbone it
    trains), so it runs its parts as the preset configures them unless its own entry says otherwise."""
    entries = _mapping(tree.get(section), section)
    own = _mapping(entries.get(method), f"{section}.{method}")
    parts = [] if method in REFERENCES else list(_method_class(method).parts)
    if not parts:
        return own
    if first_part:
        return deep_merge(_mapping(entries.get(parts[0]), f"{section}.{parts[0]}"), own)
    inherited = {part: _mapping(entries.get(part), f"{section}.{part}") for part in parts if part in entries}
    return deep_merge(inherited, own)


def _check_method_names(entries: dict[str, Any], section: str) -> None:
    """A misspelt method under ``method_options`` or ``method_optim`` would otherwise be ignored silently."""
    for name in entries:
        if name in REFERENCES:
            continue
        try:
            get_method(str(name))
        except ValueError:
            valid = ", ".join(METHODS)
            raise BenchError(f"unknown method {name!r} under {section}; valid: {valid}") from None


def _method_class(method: str) -> Any:
    try:
        return get_method(method)
    except ValueError as exc:
        raise BenchError(str(exc)) from None


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BenchError(f"{key} must be a mapping, got {value!r}")
    return value


def _dataset_facts(dataset: str, image_size: int) -> dict[str, Any]:
    """What a method may take its defaults from (``SSLMethod.dataset_defaults``)."""
    try:
        return {"paper_grids": tuple(get_dataset_spec(dataset).paper_grids), "image_size": image_size}
    except DatasetError as exc:
        raise BenchError(str(exc)) from None


def resolve_method_options(
    method: str, options: dict[str, Any], facts: dict[str, Any], jigsaw_grids: Any = None
) -> dict[str, Any]:
    """The method's full typed options (defaults filled in), so params and hash show every value."""
    if method in REFERENCES:
        if options:
            raise BenchError(f"reference {method!r} takes no method options, got {', '.join(options)}")
        return {}
    try:
        cls = get_method(method)
        options = _typed_options(cls, _mapping(options, f"method_options.{method}"), f"method_options.{method}")
        if jigsaw_grids is not None:
            options = _with_grids(cls, options, coerce("--jigsaw-grids", jigsaw_grids, tuple[int, ...]))
        return cls.resolve_options(options, facts)
    except (ValueError, TypeError) as exc:
        raise BenchError(str(exc)) from None


def _typed_options(cls: Any, options: dict[str, Any], key: str) -> dict[str, Any]:
    """Options brought to the types of the method's config (a composite's: each part's, recursively)."""
    if cls.parts:
        unknown = sorted(set(options) - set(cls.parts))
        if unknown:
            raise BenchError(f"unknown part(s) {', '.join(unknown)} of {key}; valid: {', '.join(cls.parts)}")
        return {
            name: _typed_options(part, _mapping(options.get(name), f"{key}.{name}"), f"{key}.{name}")
            for name, part in cls.parts.items()
            if name in options
        }
    hints = typing.get_type_hints(cls.config_class)
    return {k: coerce(f"{key}.{k}", v, hints[k]) if k in hints else v for k, v in options.items()}


def _with_grids(cls: Any, options: dict[str, Any], grids: tuple[int, ...]) -> dict[str, Any]:
    """``--jigsaw-grids`` into the options of a method (or of each part of one) that has ``grids``."""
    if cls.parts:
        return {name: _with_grids(part, options.get(name, {}), grids) for name, part in cls.parts.items()}
    fields = {f.name for f in dataclasses.fields(cls.config_class)}
    return {**options, "grids": grids} if "grids" in fields else options


def resolve_weights(model: ModelConfig) -> ModelConfig:
    """Fill in the sha256 of the weights file (a clear error when it is missing or another file
    than a pinned ``weights_sha256`` says), so runs from different weights never share a hash.

    A name (``imagenet``) is fetched into torch's hub cache first, unless it is there already; its
    sha256 is then that of the cached file, so the hash is the one ``--weights <that file>`` gives."""
    if model.weights is None:
        if model.weights_sha256 is not None:
            raise BenchError("model.weights_sha256 is set but model.weights (--weights) is not")
        return model
    path = model.weights
    if is_named(model.weights):
        path = str(fetch(named_weights(model.weights, model.backbone), model.weights_sha256))
    digest = file_sha256(path)
    if model.weights_sha256 is not None and model.weights_sha256 != digest:
        raise BenchError(f"weights file {path} has sha256 {digest}, not the expected {model.weights_sha256}")
    return dataclasses.replace(model, weights_sha256=digest)


def resolve_finetune(evaluation: EvalConfig, method: str, facts: dict[str, Any], options: dict[str, Any]) -> EvalConfig:
    """``finetune_mode: auto`` becomes what it means for this method (``SSLMethod.finetune_defaults``:
    progressive for a method with a hierarchy, else plain), and a progressive fine-tune's grids default
    to the method's grids or the dataset's paper grids."""
    if evaluation.finetune_mode not in FINETUNE_MODES:
        raise BenchError(f"unknown finetune mode {evaluation.finetune_mode!r}; valid: {', '.join(FINETUNE_MODES)}")
    defaults = None if method in REFERENCES else get_method(method).finetune_defaults(options)
    mode = evaluation.finetune_mode
    if mode == "auto":
        mode = defaults.mode if defaults else "plain"
    grids = evaluation.finetune_grids
    if mode == "progressive" and not grids:
        grids = tuple(defaults.grids) if defaults and defaults.grids else tuple(facts["paper_grids"])
    return dataclasses.replace(evaluation, finetune_mode=mode, finetune_grids=grids if mode == "progressive" else ())


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    if not isinstance(values, dict):
        raise BenchError(f"config section {name!r} must be a mapping, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise BenchError(f"unknown key(s) {', '.join(f'{name}.{k}' for k in unknown)}; valid: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    coerced = {key: coerce(f"{name}.{key}", value, hints[key]) for key, value in values.items()}
    return cls(**coerced)


def coerce(key: str, value: Any, hint: Any) -> Any:
    """Bring a YAML or CLI value to the field's type (YAML reads ``1e-3`` as a string), or say what is wrong.

    Numbers must be finite (no NaN, no infinity, nothing that overflows a float), integers whole (``32.9``
    is refused, not truncated), and a boolean is neither a number nor text."""
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise BenchError(f"{key} must not be empty")
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(t for t in typing.get_args(hint) if t is not type(None)) if is_union else hint
    origin = typing.get_origin(base)
    if origin is tuple:
        if isinstance(value, dict):
            raise BenchError(f"{key} expects a list, got {value!r}")
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = typing.get_args(base)[0]
        return tuple(coerce(key, v, item) for v in value)
    name = getattr(base, "__name__", str(base))
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if base in (int, float):
            if isinstance(value, (bool, list, tuple, dict)):
                raise ValueError
            number = float(value)
            if not math.isfinite(number):
                raise BenchError(f"{key} must be a finite number, got {value!r}")
            if base is float:
                return number
            if isinstance(value, int):
                return value
            if number != int(number):
                raise ValueError
            return int(number)
        if base is str:
            if isinstance(value, (bool, list, tuple, dict)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError, OverflowError):
        raise BenchError(f"{key} expects {name}, got {value!r}") from None
    return value
