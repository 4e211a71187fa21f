"""FG-SSL's hierarchical block: one branch per backbone stage (layer2, layer3, layer4 = levels 1-3), an
embedding head per level and one on the concatenation of the three levels.

One module, used by FG-SSL's pretraining (methods/fgssl.py) and by PMG's progressive fine-tune
(bench/finetune.py), which starts from a method's pretrained hierarchy or a new one.
"""

from __future__ import annotations

import torch
from torch import nn

from methods.backbones import Backbone
from methods.heads import ConvBlock, EmbeddingHead

LEVELS = (1, 2, 3)


class Hierarchy(nn.Module):
    """``blocks[k]`` turns the level-k feature map into a pooled vector ``h_k``; ``embeddings[k]`` embeds it,
    ``concat_embedding`` embeds ``cat(h_1, h_2, h_3)``. Built in that order, so a seeded run draws the same
    initial weights wherever the hierarchy is built."""

    def __init__(self, stage_channels: tuple[int, ...], mid_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        if len(stage_channels) != len(LEVELS):
            raise ValueError(f"a hierarchy needs {len(LEVELS)} backbone stages, got {len(stage_channels)}")
        self.blocks = nn.ModuleList(ConvBlock(ch, mid_channels, out_channels) for ch in stage_channels)
        self.embeddings = nn.ModuleList(EmbeddingHead(out_channels, embed_dim) for _ in LEVELS)
        self.concat_embedding = EmbeddingHead(len(LEVELS) * out_channels, embed_dim)
        self.embed_dim = embed_dim

    def hidden(self, backbone: Backbone, x: torch.Tensor) -> list[torch.Tensor]:
        """The three block outputs h_1, h_2, h_3 (one pass through the backbone)."""
        return [block(m) for block, m in zip(self.blocks, backbone.stages(x, upto=len(LEVELS)), strict=True)]

    def level_hidden(self, backbone: Backbone, level: int, x: torch.Tensor) -> torch.Tensor:
        """h_level, running the backbone only up to that level's stage."""
        return self.blocks[level - 1](backbone.stages(x, upto=level)[-1])

    def concat(self, hidden: list[torch.Tensor]) -> torch.Tensor:
        """The concat head's embedding of the three levels."""
        return self.concat_embedding(torch.cat(hidden, dim=1))
