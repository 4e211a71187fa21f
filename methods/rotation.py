"""RotNet (Gidaris et al. 2018): rotate each image by 0, 90, 180 or 270 degrees and train a 4-way
classifier on the backbone's pooled features to tell which (one of the paper's own baselines, PAPER.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from methods import distributed
from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod, StepLoss, ViewRecipe
from methods.heads import check_widths, mlp

ROTATIONS = 4
# No "geometry" op: an arbitrary rotation or a vertical flip would make the rotation label a lie, so
# ``views.rotate`` has no effect on these views. A horizontal flip keeps "up" up, so it stays.
_VIEW = (
    ("crop", {"scale_min": 0.2}),
    ("hflip", {"p": 0.5}),
    ("color_jitter", {"amplitudes": (0.4, 0.4, 0.4, 0.1), "p": 0.8}),
)
VIEWS: ViewRecipe = (_VIEW, _VIEW)
_ROTATED = "rotation.rotated"  # SSLBatch.prepared: ((rotated view 1, labels), (rotated view 2, labels))


def random_rotations(
    count: int, *, generator: torch.Generator | None = None, device: torch.device | None = None
) -> torch.Tensor:
    """``count`` rotation labels (quarter turns, int64 in 0..3), drawn from ``generator`` on ``device``."""
    device = generator.device if generator is not None else device
    return torch.randint(ROTATIONS, (count,), generator=generator, device=device)


def rotate_by(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``images`` [B, C, S, S] with image i turned ``labels[i]`` quarter turns, exactly as
    ``torch.rot90(images[i], labels[i], dims=(-2, -1))``.

    A quarter turn of a square only moves pixels, so each of the four rotations is an index map, got
    by rotating a grid of pixel numbers with ``rot90`` itself; one ``gather`` then moves every image's
    pixels by its own map. No loop over images, no sync with the device, and the layout is kept
    (channels_last in, channels_last out).
    """
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images [B, C, S, S], got shape {tuple(images.shape)}")
    if labels.shape != images.shape[:1]:
        raise ValueError(f"expected one rotation label per image ({images.shape[0]}), got shape {tuple(labels.shape)}")
    b, c, s, _ = images.shape
    grid = torch.arange(s * s, device=images.device).view(s, s)
    maps = torch.stack([torch.rot90(grid, k, dims=(0, 1)).reshape(-1) for k in range(ROTATIONS)])
    source = maps[labels.to(images.device)]  # source[i, j]: the pixel of image i that lands on pixel j
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        pixels = images.permute(0, 2, 3, 1).reshape(b, s * s, c)
        moved = pixels.gather(1, source.unsqueeze(2).expand(b, s * s, c))
        return moved.view(b, s, s, c).permute(0, 3, 1, 2)
    moved = images.reshape(b, c, s * s).gather(2, source.unsqueeze(1).expand(b, c, s * s))
    return moved.view(b, c, s, s)


def rotate(images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image turned by a random number of quarter turns; returns the images and the labels (int64)."""
    labels = random_rotations(images.shape[0], generator=generator, device=images.device).to(images.device)
    return rotate_by(images, labels), labels


@dataclass(frozen=True)
class RotationConfig:
    """``head_hidden_dim`` 0 is RotNet's linear classifier; otherwise one hidden layer (Linear-BN-ReLU)."""

    head_hidden_dim: int = 0

    def __post_init__(self) -> None:
        if self.head_hidden_dim != 0:
            check_widths("rotation", head_hidden_dim=self.head_hidden_dim)


class Rotation(SSLMethod):
    name = "rotation"
    display_name = "Rotation"
    report_order = 50
    view_recipe = VIEWS
    config_class = RotationConfig

    def __init__(self, backbone: Backbone, config: RotationConfig) -> None:
        super().__init__(backbone, config)
        hidden = (config.head_hidden_dim,) if config.head_hidden_dim else ()
        self.classifier: nn.Module = mlp(backbone.out_dim, (*hidden, ROTATIONS))

    @property
    def step_names(self) -> tuple[str, ...]:
        return ("loss",)

    def prepare(self, batch: SSLBatch) -> SSLBatch:
        """Both views rotated (view 1's draw first), and their labels."""
        rotated = tuple(self._rotate_rows(v, batch.generator) for v in (batch.view1, batch.view2))
        return dataclasses.replace(batch, prepared={**batch.prepared, _ROTATED: rotated})

    def training_steps(self, batch: SSLBatch) -> Iterator[StepLoss]:
        """Both views, each image rotated at random, through the backbone as one batch of 2B images."""
        b = batch.view1.shape[0]
        pairs = batch.prepared.get(_ROTATED) or [
            self._rotate_rows(v, batch.generator) for v in (batch.view1, batch.view2)
        ]
        rotated, labels = zip(*pairs, strict=True)
        features = self.backbone(torch.cat(rotated))
        logits = self.classifier(features)
        # Each view's logits in global-batch order, next to the labels every rank drew for the global batch.
        global_logits = torch.cat([distributed.gather(logits[:b]), distributed.gather(logits[b:])])
        loss = F.cross_entropy(global_logits, torch.cat(labels))
        yield StepLoss("loss", loss, features[:b].detach())

    @staticmethod
    def _rotate_rows(view: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows rotated by the global batch's draw (so W ranks rotate as one process does),
        and the global batch's labels."""
        b = view.shape[0]
        labels = random_rotations(b * distributed.world_size(), generator=generator, device=view.device)
        labels = labels.to(view.device)
        return rotate_by(view, labels[distributed.rank_rows(b)]), labels
