"""Jigsaw puzzles: cut each image into an n x n grid of tiles and shuffle the tiles."""

from __future__ import annotations

import torch


def check_grid(image_size: tuple[int, int], n: int) -> None:
    """Raise a clear error when an n x n grid cannot tile the image exactly."""
    height, width = image_size
    if n < 1:
        raise ValueError(f"jigsaw grid must be a positive number of tiles per side, got {n}")
    if height % n or width % n:
        raise ValueError(
            f"jigsaw grid {n} does not divide the image size {height}x{width}: "
            f"choose a grid that divides {height} (e.g. {', '.join(str(d) for d in _divisors(height))})"
        )


def jigsaw(
    images: torch.Tensor, n: int, *, generator: torch.Generator | None = None, per_sample: bool = True
) -> torch.Tensor:
    """Return ``images`` ([B, C, H, W]) with the n x n tiles of each image randomly permuted.

    ``per_sample=True`` draws one order per image (the harness default); ``False`` applies one order
    to the whole batch, as the FG-SSL/PMG reference code does. The result is an exact permutation of
    tiles: no pixel is interpolated, duplicated or lost. Fully vectorised: one ``index_select`` of
    tile rows into one new buffer, no Python loop.
    """
    if images.ndim != 4:
        raise ValueError(f"jigsaw expects [B, C, H, W], got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    check_grid((h, w), n)
    if n == 1:
        return images.clone()
    th, tw = h // n, w // n
    rows = b if per_sample else 1
    scores = torch.rand(rows, n * n, generator=generator, device=generator.device if generator else images.device)
    order = scores.argsort(dim=1).to(images.device).expand(b, n * n)  # order[i, k]: source tile of slot k
    # Gather whole tile rows (tw values each) in one index_select into one new buffer: the output row
    # y of slot (R, C) in plane p is row src_r * th + y, chunk src_c of the same plane of the input.
    device = images.device
    src_r = (order // n).view(b, 1, n, 1, n)
    src_c = (order % n).view(b, 1, n, 1, n)
    plane = (
        torch.arange(b, device=device).view(b, 1, 1, 1, 1) * c + torch.arange(c, device=device).view(1, c, 1, 1, 1)
    ) * h
    tile_row = torch.arange(th, device=device).view(1, 1, 1, th, 1)
    chunk = ((plane + src_r * th + tile_row) * n + src_c).reshape(-1)
    return images.reshape(-1, tw).index_select(0, chunk).view(b, c, h, w)


def _divisors(size: int) -> list[int]:
    return [d for d in range(2, min(size, 64) + 1) if size % d == 0][:6]
