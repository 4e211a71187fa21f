"""FG-SSL (Park and Ryu 2023): Barlow Twins between a jigsaw-shuffled view and a regularised
original, trained progressively through a hierarchical block on layer2, layer3 and layer4.

Per batch, one optimizer step per level k (finest grid on the shallowest level), then one on the
concatenation of the three levels of the unshuffled views, weighted 2 (PAPER.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from methods import distributed
from methods.backbones import Backbone
from methods.base import ParamGroup, SSLBatch, SSLMethod, StepLoss
from methods.heads import ConvBlock, EmbeddingHead
from methods.losses import BARLOW_VARIANTS, barlow_twins

SCHEDULES = ("progressive", "joint")
FORWARDS = ("lean", "full")
EMBED_SOURCES = ("intended", "authors_code")
LEVELS = (1, 2, 3)


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
        for name, width in (
            ("embed_dim", self.embed_dim),
            ("block_mid_channels", self.block_mid_channels),
            ("block_out_channels", self.block_out_channels),
        ):
            if width < 1:
                raise ValueError(f"fgssl {name} must be at least 1, got {width}")
        for name, value, valid in (
            ("bt_variant", self.bt_variant, BARLOW_VARIANTS),
            ("schedule", self.schedule, SCHEDULES),
            ("forward", self.forward, FORWARDS),
            ("embed_source", self.embed_source, EMBED_SOURCES),
        ):
            if value not in valid:
                raise ValueError(f"unknown fgssl {name} {value!r}; valid: {', '.join(valid)}")


class FGSSL(SSLMethod):
    name = "fgssl"
    view_recipe = "fgssl"
    config_class = FGSSLConfig
    steps_use_every_parameter = False  # a level's step leaves the other levels' heads untouched

    def __init__(self, backbone: Backbone, config: FGSSLConfig) -> None:
        super().__init__(backbone, config)
        c = config
        self.blocks = nn.ModuleList(
            ConvBlock(ch, c.block_mid_channels, c.block_out_channels) for ch in backbone.stage_channels
        )
        self.embeddings = nn.ModuleList(EmbeddingHead(c.block_out_channels, c.embed_dim) for _ in LEVELS)
        self.concat_embedding = EmbeddingHead(3 * c.block_out_channels, c.embed_dim)

    @property
    def step_names(self) -> tuple[str, ...]:
        names = tuple(f"level{k}" for k in sorted(self.config.levels)) + (("concat",) if self.config.concat else ())
        return ("joint",) if self.config.schedule == "joint" else names

    def param_groups(self) -> list[ParamGroup]:
        heads = [*self.blocks.parameters(), *self.embeddings.parameters(), *self.concat_embedding.parameters()]
        return [
            ParamGroup(list(self.backbone.parameters()), self.config.backbone_lr_scale),
            ParamGroup(heads, 1.0),
        ]

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

    def _level_loss(self, level: int, batch: SSLBatch) -> StepLoss:
        grid = self.config.grids[level - 1]
        # Under torch.distributed each rank shuffles its slice with the global batch's permutations.
        per_sample = not self.config.per_batch_permutation
        puzzle = distributed.sharded_jigsaw(batch.view1, grid, generator=batch.generator, per_sample=per_sample)
        e_puzzle = self._level_embedding(level, puzzle)
        e_original = self._level_embedding(level, batch.view2)
        return StepLoss(f"level{level}", self._bt(e_puzzle, e_original), e_original.detach())

    def _level_embedding(self, level: int, x: torch.Tensor) -> torch.Tensor:
        source = 1 if self.config.embed_source == "authors_code" else level
        if self.config.forward == "full":
            hidden = self.hierarchy(x)[source - 1]
        else:
            hidden = self.blocks[source - 1](self.backbone.stages(x, upto=source)[-1])
        return self.embeddings[level - 1](hidden)

    def _concat_loss(self, batch: SSLBatch) -> torch.Tensor:
        e1 = self.concat_embedding(torch.cat(self.hierarchy(batch.view1), dim=1))
        e2 = self.concat_embedding(torch.cat(self.hierarchy(batch.view2), dim=1))
        return self.config.concat_weight * self._bt(e1, e2)

    def hierarchy(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The three block outputs h_1, h_2, h_3 (pooled, ``block_out_channels`` wide each)."""
        return [block(m) for block, m in zip(self.blocks, self.backbone.stages(x, upto=3), strict=True)]

    def _bt(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Barlow Twins over the global batch: standardisation and cross-correlation see every rank's rows."""
        return barlow_twins(distributed.gather(a), distributed.gather(b), self.config.lambd, self.config.bt_variant)
