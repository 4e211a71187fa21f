"""Projection heads and FG-SSL's hierarchical block, shared by the methods."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

MAX_WIDTH = 65_536  # far beyond any head here; a larger width is a typo that would exhaust memory


def check_widths(method: str, **widths: int) -> None:
    """Layer widths of a method's heads must be in [1, MAX_WIDTH]; raises ValueError naming the option."""
    for name, width in widths.items():
        if not 1 <= width <= MAX_WIDTH:
            raise ValueError(f"{method} {name} must be in [1, {MAX_WIDTH}], got {width}")


def mlp(in_dim: int, dims: Sequence[int], last_batchnorm: bool = False) -> nn.Sequential:
    """Linear-BN-ReLU layers ending in a plain Linear (optionally BN without affine, as in BYOL/BT variants)."""
    layers: list[nn.Module] = []
    for i, out_dim in enumerate(dims):
        last = i == len(dims) - 1
        layers.append(nn.Linear(in_dim, out_dim, bias=last and not last_batchnorm))
        if not last:
            layers += [nn.BatchNorm1d(out_dim), nn.ReLU(inplace=True)]
        elif last_batchnorm:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        in_dim = out_dim
    return nn.Sequential(*layers)


class ConvBlock(nn.Module):
    """One branch of the hierarchical block: Conv1x1 + BN + ReLU, Conv3x3 + BN + ReLU, global max pool."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
            nn.BatchNorm2d(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.amax(self.body(x), dim=(2, 3))


class EmbeddingHead(nn.Module):
    """BN1d -> Linear -> BN1d -> ELU: the per-level vector FG-SSL feeds to its loss."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm1d(in_dim), nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ELU(inplace=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)
