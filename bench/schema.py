"""The run configuration's types and the run's identity (its config hash).

Plain data that imports nothing else of the project, so that every layer (resolution, runs, launchers,
tests) can share it. Resolution order and validation live in bench/resolve.py and bench/validation.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

DEVICES = ("auto", "cpu", "cuda")
EVAL_PROTOCOLS = ("knn", "linear", "finetune")
DEFAULT_EVAL_PROTOCOLS = ("knn", "linear")
FINETUNE_MODES = ("auto", "plain", "progressive")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic"
    task: str | None = None
    image_size: int = 64
    split_seed: int = 0
    synthetic_sizes: tuple[int, int, int] = (1024, 256, 256)
    root: str | None = None
    cache_dir: str | None = None
    # A seeded stratified subset for quick runs (the smoke preset): at most this many training images,
    # and validation and test images each. None: the whole split (and no change to the run's identity).
    train_limit: int | None = None
    eval_limit: int | None = None


_OPTIONAL_DATA = ("train_limit", "eval_limit")  # left out of the identity (and the params) while None
# Left out of the params while None (no data root: the synthetic set; no weights file).
_UNSET_PATHS = (("data", "root"), ("data", "cache_dir"), ("model", "weights"), ("model", "weights_sha256"))


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
    # machines it costs minutes of compilation and did not make steps faster (docs/performance.md).
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
    # The authors' fine-tune augmentation (PAPER.md): AugMix after the crop and flips (their ISIC recipe),
    # and CutMix on the batches, box areas from Beta(alpha, alpha), each image mixed with probability
    # ``finetune_cutmix_prob`` (alpha 0: no CutMix). While off they are left out of the identity and the
    # params (``unused_finetune_keys``), so configurations from before they existed keep their hash.
    finetune_augmix: bool = False
    finetune_cutmix_alpha: float = 0.0
    finetune_cutmix_prob: float = 1.0


def unused_finetune_keys(evaluation: EvalConfig) -> set[str]:
    """The fine-tune augmentation keys that change nothing at their values: AugMix off, and both CutMix
    keys while its alpha is 0."""
    unused = set() if evaluation.finetune_augmix else {"finetune_augmix"}
    if evaluation.finetune_cutmix_alpha == 0:
        unused |= {"finetune_cutmix_alpha", "finetune_cutmix_prob"}
    return unused


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
        for key in _OPTIONAL_DATA:
            if content["data"][key] is None:
                content["data"].pop(key)
        if self.views == ViewsConfig():
            content.pop("views")  # the published recipes, as every run before this section existed
        unused = unused_finetune_keys(self.eval)
        if "finetune" not in self.eval.protocols:
            unused |= {k for k in content["eval"] if k.startswith("finetune_")}
        content["eval"] = {k: v for k, v in content["eval"].items() if k not in unused}
        return content

    def config_hash(self) -> str:
        canonical = json.dumps(self.identity(), sort_keys=True, default=list)
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def flat_params(self) -> dict[str, str]:
        """``section.key`` -> value strings, for MLflow params: only values that affect the run, so the
        MLflow UI's compare view shows no fine-tune settings of runs that did not fine-tune, nor the
        synthetic split sizes of runs on real data, nor SGD's momentum under AdamW, nor paths left unset.
        Values resolved only at run time (the dataset's default task, ``device: auto``) are the run's to
        fill in (``bench.run_record.run_params``)."""
        flat: dict[str, str] = {"method": self.method, "device": self.device}
        for section in SECTIONS:
            for key, value in dataclasses.asdict(getattr(self, section)).items():
                if self._affects(section, key, value):
                    flat[f"{section}.{key}"] = _param_text(value)
        flat.update(_flatten("method", self.method_options))
        return flat

    def _affects(self, section: str, key: str, value: Any) -> bool:
        if section == "eval" and key.startswith("finetune_"):
            return "finetune" in self.eval.protocols and key not in unused_finetune_keys(self.eval)
        if section == "data" and key == "synthetic_sizes":
            return self.data.name == "synthetic"
        if section == "optim" and key == "momentum":
            return self.optim.name == "sgd"
        if (section, key) in _UNSET_PATHS or (section == "data" and key in _OPTIONAL_DATA):
            return value is not None
        return True


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "views": ViewsConfig,
}


def _flatten(prefix: str, options: dict[str, Any]) -> dict[str, str]:
    """Nested options (a composite method's parts) as ``prefix.part.key`` params."""
    flat: dict[str, str] = {}
    for key, value in options.items():
        if isinstance(value, dict):
            flat.update(_flatten(f"{prefix}.{key}", value))
        else:
            flat[f"{prefix}.{key}"] = _param_text(value)
    return flat


def _param_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)
