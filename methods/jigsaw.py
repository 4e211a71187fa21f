"""Jigsaw puzzles: cut each image into an n x n grid of tiles and shuffle the tiles."""

from __future__ import annotations

import numpy as np
import torch

# dtypes numpy can view as raw bytes; others (bfloat16, complex) take the torch path.
_NUMPY_DTYPES = frozenset(
    {
        torch.float16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)


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
    tiles: no pixel is interpolated, duplicated or lost. Fully vectorised, no Python loop: see
    ``permute_tiles``.
    """
    if images.ndim != 4:
        raise ValueError(f"jigsaw expects [B, C, H, W], got shape {tuple(images.shape)}")
    b, _, h, w = images.shape
    check_grid((h, w), n)
    if n == 1:
        return images.clone()
    rows = b if per_sample else 1
    scores = torch.rand(rows, n * n, generator=generator, device=generator.device if generator else images.device)
    order = scores.argsort(dim=1).expand(b, n * n)  # order[i, k]: source tile of slot k
    return permute_tiles(images, n, order)


def permute_tiles(images: torch.Tensor, n: int, order: torch.Tensor) -> torch.Tensor:
    """Put tile ``order[i, k]`` of image i into slot k (tiles numbered row-major on the n x n grid).

    A tile move keeps contiguous at most one tile row: W/n values of one channel in [B, C, H, W] memory,
    W/n pixels of all channels in channels_last memory (kept as such, with C times fewer, longer rows).
    So the move is one gather of such rows into one new buffer: output row y of slot (R, C) in a plane
    is input row src_r * th + y, chunk src_c, of the same plane. On the CPU (no autograd) the gather is
    numpy's ``take`` over the rows viewed as fixed-size byte records. Its per-row copy is a little
    cheaper than ``index_select``'s (14.5 vs 16.7 ns for a 56-byte row, measured), but the larger
    gain is the allocation: numpy backs large arrays with transparent huge pages, so the fresh output
    costs few page faults, where a torch allocation of a 224 px batch spends about as long faulting
    its pages in as the whole gather takes. Elsewhere (CUDA, or a tensor that needs gradients) the
    rows go through ``index_select``. Every path gives the same values.
    """
    b, c, h, w = images.shape
    th, tw = h // n, w // n
    numpy_path = _numpy_path(images)
    xp = np if numpy_path else torch
    order = order.to("cpu") if numpy_path else order.to(images.device)
    index = order.numpy() if numpy_path else order
    if not images.is_contiguous() and images.is_contiguous(memory_format=torch.channels_last):
        pixels = images.permute(0, 2, 3, 1)  # [B, H, W, C], contiguous
        moved = _gather_rows(pixels.reshape(-1, tw * c), _row_index(index, b, 1, th, n, xp), numpy_path)
        return moved.view(b, h, w, c).permute(0, 3, 1, 2)
    moved = _gather_rows(images.reshape(-1, tw), _row_index(index, b, c, th, n, xp), numpy_path)
    return moved.view(b, c, h, w)


def _gather_rows(rows: torch.Tensor, index, numpy_path: bool) -> torch.Tensor:
    """``rows[index]`` for a 2-D ``rows`` and an index of any shape, as a new [len(index), width] tensor."""
    if not numpy_path:
        return rows.index_select(0, index.reshape(-1))
    source = rows.detach().contiguous().numpy()
    record = np.dtype((np.void, source.shape[1] * source.itemsize))
    moved = np.take(source.view(record).reshape(-1), index.reshape(-1), mode="clip")
    return torch.from_numpy(moved.view(source.dtype).reshape(-1, source.shape[1]))


def _numpy_path(images: torch.Tensor) -> bool:
    needs_grad = images.requires_grad and torch.is_grad_enabled()
    return images.device.type == "cpu" and images.dtype in _NUMPY_DTYPES and not needs_grad


def _row_index(order, b: int, planes: int, th: int, n: int, xp):
    """Source tile-row numbers [B, planes, n, th, n] for ``order`` [B, n*n], in ``xp`` (numpy or torch).

    Split as per-plane/per-row (small) plus per-sample offsets (small), so the full index is made by
    one broadcast add instead of a chain of full-size temporaries."""
    kwargs = {"device": order.device} if xp is torch else {}
    offsets = ((order // n) * (th * n) + order % n).reshape(b, 1, n, 1, n)
    image, channel = xp.arange(b, **kwargs), xp.arange(planes, **kwargs)
    plane = image.reshape(b, 1, 1, 1, 1) * planes + channel.reshape(1, planes, 1, 1, 1)
    base = (plane * (th * n) + xp.arange(th, **kwargs).reshape(1, 1, 1, th, 1)) * n
    return base + offsets


def _divisors(size: int) -> list[int]:
    return [d for d in range(2, min(size, 64) + 1) if size % d == 0][:6]
