"""Range and name checks of a typed run config that need no data: every value is refused here, before
any run, store or checkpoint exists (one line, exit 2), rather than deep inside a run."""

from __future__ import annotations

from bench.devices import resolve_device
from bench.errors import BenchError
from bench.schema import DEVICES, EVAL_PROTOCOLS, OPTIMIZERS, EvalConfig, RunConfig, ViewsConfig
from methods.backbones import BACKBONES, STEMS
from methods.jigsaw import check_grid


def validate(config: RunConfig) -> None:
    """Checks that need no data: ranges, names, and the fine-tune's jigsaw grids against the image size
    (a method checks its own grids when it resolves its options)."""
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
