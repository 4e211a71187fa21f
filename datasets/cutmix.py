"""CutMix (Yun et al., ICCV 2019) on a batch, with a box and a mixing weight per image.

Why not torchvision's ``v2.CutMix``: it draws from torch's global random generator, not the run's, and uses
one box for the whole batch. Here every image gets its own Beta(alpha, alpha) area and box centre from the
caller's generator (each image is mixed with probability ``p``), all in one batched call on the images'
device. The box follows the CutMix paper's code: side ``sqrt(1 - lambda)`` of the image's, a centre drawn
over the image, clipped at the borders; the weight of an image's own label is then recomputed from the
clipped box, ``1 - pasted pixels / pixels``, so labels mix exactly as the pixels did. Images are paired by
a random permutation of the batch (an image paired with itself is unchanged whatever its box).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from datasets.augmix import dirichlet


@dataclass(frozen=True)
class CutMixBatch:
    """Mixed images, and per image: ``partner`` (the batch index whose box was pasted in), ``boxes``
    ``[B, 4]`` as integer (x1, y1, x2, y2), x2 and y2 exclusive, and ``own``, the share of the image's
    own pixels (the weight of its own label; 1 for an image left unmixed)."""

    images: torch.Tensor
    partner: torch.Tensor
    boxes: torch.Tensor
    own: torch.Tensor


@dataclass(frozen=True)
class CutMix:
    alpha: float = 1.0
    p: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.alpha) and self.alpha > 0 and 0.0 < self.p <= 1.0):
            raise ValueError(f"CutMix needs a finite alpha > 0 and p in (0, 1], got {self}")

    def sample_boxes(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A partner index per image and the clipped box pasted from it, ``[B]`` and ``[B, 4]``."""
        batch, device = x.shape[0], x.device
        height, width = x.shape[-2:]
        partner = torch.randperm(batch, generator=generator, device=device)
        area = dirichlet(torch.full((batch, 2), self.alpha, device=device), generator)[:, 0]  # Beta(a, a)
        mixed = torch.rand(batch, generator=generator, device=device) < self.p
        side = torch.where(mixed, torch.sqrt(1.0 - area), 0.0)
        half_w = torch.floor(width * side).long() // 2
        half_h = torch.floor(height * side).long() // 2
        centre_x = torch.randint(0, width, (batch,), generator=generator, device=device)
        centre_y = torch.randint(0, height, (batch,), generator=generator, device=device)
        boxes = torch.stack(
            [
                (centre_x - half_w).clamp(0, width),
                (centre_y - half_h).clamp(0, height),
                (centre_x + half_w).clamp(0, width),
                (centre_y + half_h).clamp(0, height),
            ],
            dim=1,
        )
        return partner, boxes

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> CutMixBatch:
        partner, boxes = self.sample_boxes(x, generator)
        height, width = x.shape[-2:]
        cols = torch.arange(width, device=x.device)
        rows = torch.arange(height, device=x.device)
        in_cols = (cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])  # [B, W]
        in_rows = (rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])  # [B, H]
        inside = (in_rows[:, :, None] & in_cols[:, None, :]).unsqueeze(1)  # [B, 1, H, W]
        images = torch.where(inside, x[partner], x)
        pasted = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        own = 1.0 - pasted.to(x.dtype) / (height * width)
        return CutMixBatch(images, partner, boxes, own)
