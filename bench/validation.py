"""Range and name checks of a typed run config that need no data: every value is refused here, before
any run, store or checkpoint exists (one line, exit 2), rather than deep inside a run."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from bench.devices import resolve_device
from bench.errors import BenchError
from bench.imagenet import is_named, named_weights
from bench.schema import DEVICES, EVAL_PROTOCOLS, OPTIMIZERS, EvalConfig, RunConfig, ViewsConfig
from methods.backbones import BACKBONES, STEMS
from methods.jigsaw import check_grid

# Upper bounds that no real run reaches, so that an absurd value (a typo, an overflow) is refused here
# rather than as an out-of-memory error or an hours-long loop.
MAX_IMAGE_SIZE = 1024
MAX_COUNT = 100_000
MAX_LR = 10.0


def validate(config: RunConfig) -> None:
    """Checks that need no data: ranges, names, and the fine-tune's jigsaw grids against the image size
    (a method checks its own grids when it resolves its options)."""
    optim, train = config.optim, config.train
    checks = [
        (config.device in DEVICES, f"unknown device {config.device!r}; valid: {', '.join(DEVICES)}"),
        (optim.name in OPTIMIZERS, f"unknown optimizer {optim.name!r}; valid: {', '.join(OPTIMIZERS)}"),
        (0 < optim.lr <= MAX_LR, f"learning rate must be in (0, {MAX_LR}], got {optim.lr}"),
        (0 <= optim.momentum < 1, f"optim.momentum must be in [0, 1), got {optim.momentum}"),
        (0 <= optim.weight_decay <= 1, f"optim.weight_decay must be in [0, 1], got {optim.weight_decay}"),
        (
            0 <= optim.warmup_epochs <= train.epochs,
            f"optim.warmup_epochs must be in [0, train.epochs={train.epochs}], got {optim.warmup_epochs}",
        ),
        (2 <= train.batch_size <= MAX_COUNT, f"batch size must be in [2, {MAX_COUNT}], got {train.batch_size}"),
        (1 <= train.epochs <= MAX_COUNT, f"epochs must be in [1, {MAX_COUNT}], got {train.epochs}"),
        (0 <= train.seed < 2**32, f"seed must be in [0, 2**32), got {train.seed}"),
        (
            0 <= config.train.collapse_threshold < 1,
            f"train.collapse_threshold must be in [0, 1), got {config.train.collapse_threshold}",
        ),
        (
            16 <= config.data.image_size <= MAX_IMAGE_SIZE,
            f"image size must be in [16, {MAX_IMAGE_SIZE}] px, got {config.data.image_size}",
        ),
        (0 <= config.data.split_seed < 2**32, f"data.split_seed must be in [0, 2**32), got {config.data.split_seed}"),
        *_synthetic_checks(config.data.synthetic_sizes),
        *_limit_checks(config.data.train_limit, config.data.eval_limit),
        (
            config.model.backbone in BACKBONES,
            f"unknown backbone {config.model.backbone!r}; valid: {', '.join(BACKBONES)}",
        ),
        (config.model.stem in STEMS, f"unknown stem {config.model.stem!r}; valid: {', '.join(STEMS)}"),
        *_eval_checks(config.eval),
        *_weights_checks(config.model.weights_sha256),
        *_views_checks(config.views),
    ]
    bad_protocols = sorted(set(config.eval.protocols) - set(EVAL_PROTOCOLS))
    checks.append(
        (not bad_protocols, f"unknown eval protocol(s) {', '.join(bad_protocols)}; valid: {', '.join(EVAL_PROTOCOLS)}")
    )
    if "finetune" in config.eval.protocols:
        checks += _finetune_checks(config.eval) + _finetune_augment_checks(config.eval)
    for ok, message in checks:
        if not ok:
            raise BenchError(message)
    check_cache_dir(config.data.cache_dir)
    if is_named(config.model.weights):  # a name torchvision has no file for, before anything is downloaded
        named_weights(config.model.weights, config.model.backbone)
    resolve_device(config.device)  # --device cuda on a machine without CUDA, before any run is created
    for grid in config.eval.finetune_grids if "finetune" in config.eval.protocols else ():
        try:
            check_grid((config.data.image_size, config.data.image_size), grid)
        except ValueError as exc:
            raise BenchError(f"{exc} (set eval.finetune_grids for the progressive fine-tune)") from None


def _synthetic_checks(sizes: tuple[int, ...]) -> list[tuple[bool, str]]:
    ok = len(sizes) == 3 and all(1 <= n <= MAX_COUNT for n in sizes)
    return [
        (
            ok,
            f"data.synthetic_sizes must be three split sizes (train, val, test) in [1, {MAX_COUNT}], got {list(sizes)}",
        )
    ]


def _limit_checks(train_limit: int | None, eval_limit: int | None) -> list[tuple[bool, str]]:
    return [
        (
            train_limit is None or 2 <= train_limit <= MAX_COUNT,
            f"data.train_limit must be in [2, {MAX_COUNT}] (or null: the whole split), got {train_limit}",
        ),
        (
            eval_limit is None or 1 <= eval_limit <= MAX_COUNT,
            f"data.eval_limit must be in [1, {MAX_COUNT}] (or null: the whole split), got {eval_limit}",
        ),
    ]


def _eval_checks(evaluation: EvalConfig) -> list[tuple[bool, str]]:
    return [
        (len(evaluation.protocols) >= 1, "eval.protocols must name at least one protocol"),
        (1 <= evaluation.knn_k <= MAX_COUNT, f"knn_k must be in [1, {MAX_COUNT}], got {evaluation.knn_k}"),
        (evaluation.knn_temperature > 0, f"eval.knn_temperature must be > 0, got {evaluation.knn_temperature}"),
        (
            1 <= evaluation.batch_size <= MAX_COUNT,
            f"eval.batch_size must be in [1, {MAX_COUNT}], got {evaluation.batch_size}",
        ),
    ]


def _weights_checks(sha256: str | None) -> list[tuple[bool, str]]:
    ok = sha256 is None or (len(sha256) == 64 and all(c in "0123456789abcdef" for c in sha256))
    return [(ok, f"model.weights_sha256 must be 64 lowercase hex digits, got {sha256!r}")]


def check_cache_dir(cache_dir: str | None) -> None:
    """A cache folder that is a file, or that cannot be created or written, is refused before any run."""
    if cache_dir is None:
        return
    path = Path(cache_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise BenchError(f"data.cache_dir {cache_dir} is a file, not a folder")
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None or not existing.is_dir() or not _can_create_files_in(existing):
        raise BenchError(f"data.cache_dir {cache_dir} cannot be written ({existing} is not a writable folder)")


def _can_create_files_in(folder: Path) -> bool:
    """Asked of the file system itself: permission bits do not tell root about read-only mounts or sysfs.
    The probe file is gone when this returns."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


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
        (
            1 <= evaluation.finetune_epochs <= MAX_COUNT,
            f"eval.finetune_epochs must be in [1, {MAX_COUNT}], got {evaluation.finetune_epochs}",
        ),
        (
            2 <= evaluation.finetune_batch_size <= MAX_COUNT,
            f"eval.finetune_batch_size must be in [2, {MAX_COUNT}], got {evaluation.finetune_batch_size}",
        ),
        (
            0 < evaluation.finetune_lr <= MAX_LR,
            f"eval.finetune_lr must be in (0, {MAX_LR}], got {evaluation.finetune_lr}",
        ),
        (
            0 <= evaluation.finetune_weight_decay <= 1,
            f"eval.finetune_weight_decay must be in [0, 1], got {evaluation.finetune_weight_decay}",
        ),
        (
            evaluation.finetune_backbone_lr_scale >= 0,
            f"eval.finetune_backbone_lr_scale must be >= 0, got {evaluation.finetune_backbone_lr_scale}",
        ),
        (
            evaluation.finetune_mode == "plain" or (len(grids) == 3 and min(grids) >= 1),
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


MAX_CUTMIX_ALPHA = 100.0  # Beta(100, 100) already puts every box within a few % of half the image


def _finetune_augment_checks(evaluation: EvalConfig) -> list[tuple[bool, str]]:
    alpha, prob = evaluation.finetune_cutmix_alpha, evaluation.finetune_cutmix_prob
    return [
        (
            math.isfinite(alpha) and 0 <= alpha <= MAX_CUTMIX_ALPHA,
            f"eval.finetune_cutmix_alpha must be in [0, {MAX_CUTMIX_ALPHA:g}] (0: no CutMix), got {alpha}",
        ),
        (
            math.isfinite(prob) and 0 < prob <= 1,
            f"eval.finetune_cutmix_prob must be in (0, 1], got {prob}",
        ),
        (
            isinstance(evaluation.finetune_augmix, bool),
            f"eval.finetune_augmix must be true or false, got {evaluation.finetune_augmix!r}",
        ),
    ]
