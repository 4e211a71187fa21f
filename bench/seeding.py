"""Seeding: one seed fixes model init, data order and augmentation, so a CPU run repeats bit for bit."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator derived from (seed, epoch, stream) alone, so resuming at an epoch boundary needs no
    saved RNG state; ``stream`` separates independent uses (data order, augmentation)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + epoch) * 101 + stream)
