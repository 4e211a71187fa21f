"""Typed run configuration, presets as data, and the config hash that identifies a run.

Resolution order, later wins: dataclass defaults < preset YAML < ``--config`` file < CLI flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.devices import resolve_device
from bench.errors import BenchError
from bench.weights import file_sha256
from datasets import DatasetError, get_dataset_spec
from methods import get_method
from methods.backbones import BACKBONES, STEMS
from methods.base import build_config
from methods.jigsaw import check_grid

PRESET_DIR = Path(__file__).with_name("presets")
PRESETS: tuple[str, ...] = tuple(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
DEVICES = ("auto", "cpu", "cuda")
EVAL_PROTOCOLS = ("knn", "linear", "finetune")
DEFAULT_EVAL_PROTOCOLS = ("knn", "linear")
FINETUNE_MODES = ("auto", "plain", "progressive")
OPTIMIZERS = ("sgd", "adamw")
REFERENCE_METHODS = ("random_init", "supervised")


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic"
    task: str | None = None
    image_size: int = 64
    split_seed: int = 0
    synthetic_sizes: tuple[int, int, int] = (1024, 256, 256)
    root: str | None = None
    cache_dir: str | None = None


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "resnet18"
    stem: str = "imagenet"
    # A local torchvision-format state dict the backbone starts from (never downloaded); the builder
    # fills in its sha256, which (not the path) is part of the run's identity.
    weights: str | None = None
    weights_sha256: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 0


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 20
    batch_size: int = 64
    seed: int = 0
    # torch.compile the modules the method calls (bench/trainer.py). Off by default: on the 2-core CPU
    # machines it costs minutes of compilation and did not make steps faster (README, Performance).
    compile: bool = False
    # A run fails as collapsed when the spread of its embeddings (bench/collapse.py: 0 = identical,
    # about 1 = evenly spread) falls below this at the end of an epoch; 0 disables the check.
    collapse_threshold: float = 0.01
    # Under torchrun, normalise every BatchNorm with the statistics of the global batch (all ranks), so
    # W processes with B/W images train exactly like one with B. Off: each rank uses its own B/W rows,
    # as plain DDP does. Changes nothing for one process (bench/distributed.py, methods/distributed.py).
    sync_batchnorm: bool = False


@dataclass(frozen=True)
class ViewsConfig:
    """Changes to the SSL methods' published view recipes (datasets/augment.py), for images those
    recipes were not made for; they apply to every SSL method of a run alike. At the defaults nothing
    changes, and the section is left out of the run's identity, so runs from before it existed keep
    their config hash.

    ``crop_scale_min``: lower area bound of the random resized crop (None: the recipe's, 0.08 or
    SimCLR's 0.2; FG-SSL's views do not crop). ``color_jitter``: a factor on every recipe's colour
    jitter amplitudes, 0 for none (None: the recipe's own); FG-SSL's views, which have none, get
    BYOL's (0.4, 0.4, 0.2, 0.1) times the factor. ``rotate``: a rotation by any angle and a vertical
    flip in both views, for images without an "up" (dermoscopy, fundus)."""

    crop_scale_min: float | None = None
    color_jitter: float | None = None
    rotate: bool = False


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocols and their settings. ``finetune_*`` apply to the ``finetune`` protocol only
    (and are left out of the run's identity when it is not selected). ``finetune_mode`` ``auto``
    resolves to ``progressive`` (PMG) for FG-SSL and ``plain`` (cross-entropy) for everything else;
    ``finetune_grids`` (empty: FG-SSL's grids, else the dataset's paper grids) and the widths of new
    hierarchical heads on non-FG-SSL backbones only matter for the progressive fine-tune."""

    protocols: tuple[str, ...] = DEFAULT_EVAL_PROTOCOLS
    knn_k: int = 20
    knn_temperature: float = 0.07
    batch_size: int = 256
    finetune_mode: str = "auto"
    finetune_epochs: int = 10
    finetune_batch_size: int = 64
    finetune_lr: float = 1e-3
    finetune_weight_decay: float = 1e-4
    finetune_backbone_lr_scale: float = 1.0
    finetune_grids: tuple[int, ...] = ()
    finetune_block_channels: tuple[int, int] = (512, 1024)
    finetune_embed_dim: int = 512


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines one run's result, plus where it runs (not part of the hash)."""

    method: str
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    views: ViewsConfig = field(default_factory=ViewsConfig)
    method_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    ablation: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def identity(self) -> dict[str, Any]:
        """What determines the result; paths and the device are left out so the same experiment on
        another machine or disk layout has the same identity."""
        content = self.to_dict()
        content.pop("device")
        content.pop("ablation")
        content["data"].pop("root")
        content["data"].pop("cache_dir")
        content["model"].pop("weights")  # the file's sha256 identifies the weights, not its path
        if self.views == ViewsConfig():
            content.pop("views")  # the published recipes, as every run before this section existed
        if "finetune" not in self.eval.protocols:
            content["eval"] = {k: v for k, v in content["eval"].items() if not k.startswith("finetune_")}
        return content

    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """``section.key`` -> value strings, for MLflow params (same names for every method)."""
        flat: dict[str, str] = {"method": self.method, "device": self.device}
        for section in _SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                flat[f"{section}.{key}"] = _param_text(value)
        for key, value in self.method_options.items():
            flat[f"method.{key}"] = _param_text(value)
        return flat


@dataclass(frozen=True)
class Sweep:
    """The axes a ``bench run`` expands into runs (their cross product), over one base config."""

    methods: tuple[str, ...]
    datasets: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    base: dict[str, Any]


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


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "views": ViewsConfig,
}
_SWEEP_KEYS = ("methods", "datasets", "batch_sizes", "seeds")
_OTHER_KEYS = ("method_options", "method_optim", "device", "ablation", "ablation_variants")


def build_run_config(
    tree: dict[str, Any], method: str, dataset: str, batch_size: int, seed: int, ablation: str | None = None
) -> RunConfig:
    """One run's typed config from the merged tree and its point in the sweep (``ablation`` labels
    an ablation variant whose options are already merged into the tree)."""
    unknown = sorted(set(tree) - set(_SECTIONS) - set(_SWEEP_KEYS) - set(_OTHER_KEYS))
    if unknown:
        valid = ", ".join([*_SECTIONS, *_SWEEP_KEYS, *_OTHER_KEYS])
        raise BenchError(f"unknown config section(s) {', '.join(unknown)}; valid: {valid}")
    point = {"data": {"name": dataset}, "train": {"batch_size": batch_size, "seed": seed}}
    optim_override = (tree.get("method_optim") or {}).get(method, {})
    tree = deep_merge(tree, deep_merge(point, {"optim": optim_override}))
    sections = {name: _build_section(name, cls, tree.get(name) or {}) for name, cls in _SECTIONS.items()}
    options = resolve_method_options(method, dataset, (tree.get("method_options") or {}).get(method, {}))
    sections["model"] = resolve_weights(sections["model"])
    sections["eval"] = resolve_finetune(sections["eval"], method, dataset, options)
    config = RunConfig(
        method=method, method_options=options, device=tree.get("device", "auto"), ablation=ablation, **sections
    )
    validate(config)
    return config


def resolve_method_options(method: str, dataset: str, options: dict[str, Any]) -> dict[str, Any]:
    """The method's full typed options (defaults filled in), so params and hash show every value.

    FG-SSL's jigsaw grids default to the dataset's grids from the paper (same tile-to-image ratio).
    """
    if method in REFERENCE_METHODS:
        if options:
            raise BenchError(f"reference {method!r} takes no method options, got {', '.join(options)}")
        return {}
    try:
        cls = get_method(method)
        hints = typing.get_type_hints(cls.config_class)
        options = {
            k: coerce(f"method_options.{method}.{k}", v, hints[k]) if k in hints else v for k, v in options.items()
        }
        if method == "fgssl" and "grids" not in options:
            options = {**options, "grids": get_dataset_spec(dataset).paper_grids}
        return dataclasses.asdict(build_config(cls.config_class, options, method))
    except (ValueError, TypeError, DatasetError) as exc:
        raise BenchError(str(exc)) from None


def resolve_weights(model: ModelConfig) -> ModelConfig:
    """Fill in the sha256 of the weights file (a clear error when it is missing or another file
    than a pinned ``weights_sha256`` says), so runs from different weights never share a hash."""
    if model.weights is None:
        if model.weights_sha256 is not None:
            raise BenchError("model.weights_sha256 is set but model.weights (--weights) is not")
        return model
    digest = file_sha256(model.weights)
    if model.weights_sha256 is not None and model.weights_sha256 != digest:
        raise BenchError(f"weights file {model.weights} has sha256 {digest}, not the expected {model.weights_sha256}")
    return dataclasses.replace(model, weights_sha256=digest)


def resolve_finetune(evaluation: EvalConfig, method: str, dataset: str, options: dict[str, Any]) -> EvalConfig:
    """``finetune_mode: auto`` becomes what it means for this method (FG-SSL: progressive, else plain),
    and a progressive fine-tune's grids default to FG-SSL's grids or the dataset's paper grids."""
    if evaluation.finetune_mode not in FINETUNE_MODES:
        raise BenchError(f"unknown finetune mode {evaluation.finetune_mode!r}; valid: {', '.join(FINETUNE_MODES)}")
    mode = evaluation.finetune_mode
    if mode == "auto":
        mode = "progressive" if method == "fgssl" else "plain"
    grids = evaluation.finetune_grids
    if mode == "progressive" and not grids:
        try:
            grids = tuple(options["grids"]) if method == "fgssl" else tuple(get_dataset_spec(dataset).paper_grids)
        except DatasetError as exc:
            raise BenchError(str(exc)) from None
    return dataclasses.replace(evaluation, finetune_mode=mode, finetune_grids=grids if mode == "progressive" else ())


def validate(config: RunConfig) -> None:
    """Checks that need no data: ranges, names, and jigsaw grids against the image size."""
    checks = [
        (config.device in DEVICES, f"unknown device {config.device!r}; valid: {', '.join(DEVICES)}"),
        (config.optim.name in OPTIMIZERS, f"unknown optimizer {config.optim.name!r}; valid: {', '.join(OPTIMIZERS)}"),
        (config.optim.lr > 0, f"learning rate must be > 0, got {config.optim.lr}"),
        (config.train.batch_size >= 2, f"batch size must be at least 2, got {config.train.batch_size}"),
        (config.train.epochs >= 1, f"epochs must be at least 1, got {config.train.epochs}"),
        (0 <= config.train.seed < 2**32, f"seed must be in [0, 2**32), got {config.train.seed}"),
        (
            0 <= config.train.collapse_threshold < 1,
            f"train.collapse_threshold must be in [0, 1), got {config.train.collapse_threshold}",
        ),
        (config.data.image_size >= 16, f"image size must be at least 16 px, got {config.data.image_size}"),
        (
            config.model.backbone in BACKBONES,
            f"unknown backbone {config.model.backbone!r}; valid: {', '.join(BACKBONES)}",
        ),
        (config.model.stem in STEMS, f"unknown stem {config.model.stem!r}; valid: {', '.join(STEMS)}"),
        (config.eval.knn_k >= 1, f"knn_k must be at least 1, got {config.eval.knn_k}"),
        *_views_checks(config.views),
    ]
    bad_protocols = sorted(set(config.eval.protocols) - set(EVAL_PROTOCOLS))
    checks.append(
        (not bad_protocols, f"unknown eval protocol(s) {', '.join(bad_protocols)}; valid: {', '.join(EVAL_PROTOCOLS)}")
    )
    if "finetune" in config.eval.protocols:
        checks += _finetune_checks(config.eval)
    for ok, message in checks:
        if not ok:
            raise BenchError(message)
    resolve_device(config.device)  # --device cuda on a machine without CUDA, before any run is created
    for grid in config.method_options.get("grids", ()):
        try:
            check_grid((config.data.image_size, config.data.image_size), grid)
        except ValueError as exc:
            raise BenchError(f"{exc} (set method_options.fgssl.grids or --jigsaw-grids)") from None
    for grid in config.eval.finetune_grids if "finetune" in config.eval.protocols else ():
        try:
            check_grid((config.data.image_size, config.data.image_size), grid)
        except ValueError as exc:
            raise BenchError(f"{exc} (set eval.finetune_grids for the progressive fine-tune)") from None


def _views_checks(views: ViewsConfig) -> list[tuple[bool, str]]:
    crop, jitter = views.crop_scale_min, views.color_jitter
    return [
        (crop is None or 0 < crop <= 1, f"views.crop_scale_min must be in (0, 1], got {crop}"),
        # hue, the recipes' 0.1 turns at most, must stay within torchvision's [0, 0.5]
        (jitter is None or 0 <= jitter <= 5, f"views.color_jitter must be in [0, 5], got {jitter}"),
    ]


def _finetune_checks(evaluation: EvalConfig) -> list[tuple[bool, str]]:
    grids = evaluation.finetune_grids
    return [
        (evaluation.finetune_epochs >= 1, f"eval.finetune_epochs must be at least 1, got {evaluation.finetune_epochs}"),
        (
            evaluation.finetune_batch_size >= 2,
            f"eval.finetune_batch_size must be at least 2, got {evaluation.finetune_batch_size}",
        ),
        (evaluation.finetune_lr > 0, f"eval.finetune_lr must be > 0, got {evaluation.finetune_lr}"),
        (
            evaluation.finetune_backbone_lr_scale >= 0,
            f"eval.finetune_backbone_lr_scale must be >= 0, got {evaluation.finetune_backbone_lr_scale}",
        ),
        (
            evaluation.finetune_mode == "plain" or len(grids) == 3,
            f"eval.finetune_grids must be three tile counts (levels 1-3, finest first), got {list(grids)}",
        ),
        (
            len(evaluation.finetune_block_channels) == 2 and min(evaluation.finetune_block_channels) >= 1,
            f"eval.finetune_block_channels must be two positive widths, got {list(evaluation.finetune_block_channels)}",
        ),
        (
            evaluation.finetune_embed_dim >= 1,
            f"eval.finetune_embed_dim must be >= 1, got {evaluation.finetune_embed_dim}",
        ),
    ]


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
    """Bring a YAML or CLI value to the field's type (YAML reads ``1e-3`` as a string), or say what is wrong."""
    if value is None:
        if type(None) in typing.get_args(hint):
            return None
        raise BenchError(f"{key} must not be empty")
    is_union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    base = next(t for t in typing.get_args(hint) if t is not type(None)) if is_union else hint
    origin = typing.get_origin(base)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            value = [value]
        item = typing.get_args(base)[0]
        return tuple(coerce(key, v, item) for v in value)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            raise ValueError
        if base is int:
            number = float(value)
            if number != int(number):
                raise ValueError
            return int(number)
        if base is float:
            return float(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise BenchError(f"{key} expects {getattr(base, '__name__', base)}, got {value!r}") from None
    return value


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
