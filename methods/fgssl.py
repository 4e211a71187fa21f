"""FG-SSL (Park and Ryu 2023): Barlow Twins between a jigsaw-shuffled view and a regularised
original, trained progressively through a hierarchical block on layer2, layer3 and layer4.

Per batch, one optimizer step per level k (finest grid on the shallowest level), then one on the
concatenation of the three levels of the unshuffled views, weighted 2 (PAPER.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from methods import distributed
from methods.backbones import Backbone
from methods.base import FinetuneDefaults, ParamGroup, SSLBatch, SSLMethod, StepLoss, ViewRecipe
from methods.heads import check_widths
from methods.hierarchy import LEVELS, Hierarchy
from methods.jigsaw import check_grid
from methods.losses import BARLOW_VARIANTS, barlow_twins

SCHEDULES = ("progressive", "joint")
FORWARDS = ("lean", "full")
EMBED_SOURCES = ("intended", "authors_code")
# The paper's views (PAPER.md, progressive step): no crop, no colour jitter unless views.color_jitter asks.
_JITTER = ("color_jitter", {"amplitudes": (0.4, 0.4, 0.2, 0.1), "p": 0.8, "optional": True})
VIEWS: ViewRecipe = (
    (("geometry", {}), ("hflip", {"p": 0.5}), _JITTER, ("grayscale", {"p": 0.2}), ("blur", {"p": 1.0})),
    (("geometry", {}), _JITTER, ("grayscale", {"p": 0.2}), ("blur", {"p": 0.1}), ("solarize", {"p": 0.2})),
)


@dataclass(frozen=True)
class FGSSLConfig:
    """``grids`` are tiles per side for levels 1..3, finest first.

    ``forward="lean"`` computes only what each step's loss depends on (the backbone up to that
    level's stage and that level's block); ``"full"`` runs every stage and block in every step as the
    authors' model does. Gradients are identical; BatchNorm running statistics of the stages a step
    does not use are updated only in ``"full"``.
    ``embed_source="authors_code"`` reproduces the authors' code, which embeds levels 2 and 3 from
    the level-1 block's output.
    """

    grids: tuple[int, int, int] = (8, 4, 2)
    levels: tuple[int, ...] = LEVELS
    concat: bool = True
    concat_weight: float = 2.0
    block_mid_channels: int = 512
    block_out_channels: int = 1024
    embed_dim: int = 512
    lambd: float = 5e-3
    bt_variant: str = "standard"
    schedule: str = "progressive"
    per_batch_permutation: bool = False
    backbone_lr_scale: float = 0.1
    forward: str = "lean"
    embed_source: str = "intended"

    def __post_init__(self) -> None:
        if len(self.grids) != 3 or any(n < 1 for n in self.grids):
            raise ValueError(f"fgssl grids must be three positive tile counts (finest first), got {self.grids}")
        if not set(self.levels) <= set(LEVELS) or len(set(self.levels)) != len(self.levels):
            raise ValueError(f"fgssl levels must be distinct values from {LEVELS}, got {self.levels}")
        if not self.levels and not self.concat:
            raise ValueError("fgssl needs at least one level or the concat step")
        check_widths(
            "fgssl",
            embed_dim=self.embed_dim,
            block_mid_channels=self.block_mid_channels,
            block_out_channels=self.block_out_channels,
        )
        for name, value in (
            ("lambd", self.lambd),
            ("concat_weight", self.concat_weight),
            ("backbone_lr_scale", self.backbone_lr_scale),
        ):
            if value < 0:
                raise ValueError(f"fgssl {name} must be >= 0, got {value}")
        for name, value, valid in (
            ("bt_variant", self.bt_variant, BARLOW_VARIANTS),
            ("schedule", self.schedule, SCHEDULES),
            ("forward", self.forward, FORWARDS),
            ("embed_source", self.embed_source, EMBED_SOURCES),
        ):
            if value not in valid:
                raise ValueError(f"unknown fgssl {name} {value!r}; valid: {', '.join(valid)}")


# The hierarchy ablations PAPER.md implies: variant -> options that differ from the full method (levels
# 1-3 + concat, progressive); jigsaw grid sets are added where they divide the image size.
HIERARCHY_ABLATION: dict[str, dict[str, Any]] = {
    "full": {},
    "levels-1": {"levels": [1], "concat": False},
    "levels-12": {"levels": [1, 2], "concat": False},
    "levels-123": {"levels": [1, 2, 3], "concat": False},
    "joint": {"schedule": "joint"},
    "embed-128": {"embed_dim": 128},
    "bt-fgssl-code": {"bt_variant": "fgssl_code"},
    "per-batch-permutation": {"per_batch_permutation": True},
}
ABLATION_GRID_SETS: tuple[tuple[int, int, int], ...] = ((32, 16, 8), (16, 8, 4), (8, 4, 2))


class FGSSL(SSLMethod):
    name = "fgssl"
    display_name = "FG-SSL"
    report_order = 0
    report_baseline = True
    view_recipe = VIEWS
    config_class = FGSSLConfig
    search_space = {"lambd": ("float", 1e-3, 3e-2, True), "embed_dim": ("categorical", (128, 256, 512))}
    dataset_defaults = {"grids": "paper_grids"}
    ablations = {"hierarchy": HIERARCHY_ABLATION}
    steps_use_every_parameter = False  # a level's step leaves the other levels' heads untouched

    def __init__(self, backbone: Backbone, config: FGSSLConfig) -> None:
        super().__init__(backbone, config)
        c = config
        self.hierarchy = Hierarchy(backbone.stage_channels, c.block_mid_channels, c.block_out_channels, c.embed_dim)

    @classmethod
    def check_against_image(cls, config: FGSSLConfig, image_size: int | None) -> None:
        for grid in config.grids if image_size is not None else ():
            try:
                check_grid((image_size, image_size), grid)
            except ValueError as exc:
                raise ValueError(f"{exc} (set method_options.{cls.name}.grids or --jigsaw-grids)") from None

    @classmethod
    def ablation_variants(cls, name: str, image_size: int) -> dict[str, dict[str, Any]]:
        variants = super().ablation_variants(name, image_size)
        for grids in ABLATION_GRID_SETS:
            if all(image_size % n == 0 and image_size // n >= 2 for n in grids):
                variants["grids-" + "-".join(map(str, grids))] = {"grids": list(grids)}
        return variants

    @classmethod
    def finetune_defaults(cls, options: Mapping[str, Any]) -> FinetuneDefaults:
        return FinetuneDefaults("progressive", tuple(options["grids"]))

    def pretrained_hierarchy(self) -> Hierarchy:
        return self.hierarchy

    @property
    def step_names(self) -> tuple[str, ...]:
        names = tuple(f"level{k}" for k in sorted(self.config.levels)) + (("concat",) if self.config.concat else ())
        return ("joint",) if self.config.schedule == "joint" else names

    def param_groups(self) -> list[ParamGroup]:
        return [
            ParamGroup(list(self.backbone.parameters()), self.config.backbone_lr_scale),
            ParamGroup(list(self.hierarchy.parameters()), 1.0),
        ]

    def prepare(self, batch: SSLBatch) -> SSLBatch:
        """Every level's jigsaw of ``view1``, drawn in the order the steps take them (finest first)."""
        puzzles = {_puzzle_key(k): self._puzzle(k, batch) for k in sorted(self.config.levels)}
        return dataclasses.replace(batch, prepared={**batch.prepared, **puzzles})

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        losses = (self._level_loss(k, batch) for k in sorted(self.config.levels))
        if self.config.schedule == "progressive":
            yield from losses
            if self.config.concat:
                yield StepLoss("concat", self._concat_loss(batch))
            return
        steps = list(losses)
        total = sum(step.loss for step in steps)
        if self.config.concat:
            total = total + self._concat_loss(batch)
        yield StepLoss("joint", total, steps[0].embedding if steps else None)

    def _puzzle(self, level: int, batch: SSLBatch) -> torch.Tensor:
        """``view1`` shuffled on the level's grid: prepared ahead (``prepare``), else drawn now."""
        if _puzzle_key(level) in batch.prepared:
            return batch.prepared[_puzzle_key(level)]
        grid = self.config.grids[level - 1]
        # Under torch.distributed each rank shuffles its slice with the global batch's permutations.
        per_sample = not self.config.per_batch_permutation
        return distributed.sharded_jigsaw(batch.view1, grid, generator=batch.generator, per_sample=per_sample)

    def _level_loss(self, level: int, batch: SSLBatch) -> StepLoss:
        e_puzzle = self._level_embedding(level, self._puzzle(level, batch))
        e_original = self._level_embedding(level, batch.view2)
        return StepLoss(f"level{level}", self._bt(e_puzzle, e_original), e_original.detach())

    def _level_embedding(self, level: int, x: torch.Tensor) -> torch.Tensor:
        source = 1 if self.config.embed_source == "authors_code" else level
        if self.config.forward == "full":
            hidden = self.hierarchy.hidden(self.backbone, x)[source - 1]
        else:
            hidden = self.hierarchy.level_hidden(self.backbone, source, x)
        return self.hierarchy.embeddings[level - 1](hidden)

    def _concat_loss(self, batch: SSLBatch) -> torch.Tensor:
        e1 = self.hierarchy.concat(self.hierarchy.hidden(self.backbone, batch.view1))
        e2 = self.hierarchy.concat(self.hierarchy.hidden(self.backbone, batch.view2))
        return self.config.concat_weight * self._bt(e1, e2)

    def _bt(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Barlow Twins over the global batch: standardisation and cross-correlation see every rank's rows."""
        return barlow_twins(distributed.gather(a), distributed.gather(b), self.config.lambd, self.config.bt_variant)


def _puzzle_key(level: int) -> str:
    return f"{FGSSL.name}.jigsaw{level}"
