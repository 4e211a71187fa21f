"""Collapse detection: an SSL run whose embeddings stopped varying between images has failed, even
when its loss still looks reasonable (BYOL's trivial solution, a Barlow Twins run gone flat).

The measure is the spread of L2-normalised embeddings: the standard deviation across images of each
dimension, averaged over dimensions and multiplied by sqrt(d). Identical embeddings give 0; embeddings
spread evenly over the unit sphere give about 1, whatever the width d.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embedding_spread(z: torch.Tensor) -> float:
    """sqrt(d) times the mean per-dimension std of the L2-normalised rows of ``z`` (n x d, n >= 2)."""
    if z.ndim != 2 or len(z) < 2:
        raise ValueError(f"need an (n >= 2) x d matrix of embeddings, got shape {tuple(z.shape)}")
    normalised = F.normalize(z.double(), dim=1)
    return float(normalised.std(dim=0).mean() * normalised.shape[1] ** 0.5)
