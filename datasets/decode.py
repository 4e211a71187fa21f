"""Turning image files into fixed-size uint8 arrays, in parallel, reporting files that fail.

One decode rule for every dataset (RGB, shorter side to S with antialiased bilinear, centre crop),
so a cached array and a freshly decoded one are byte-identical.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

# Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 64
# Files per inter-process message: large enough to amortise pickling, small enough for a live bar.
CHUNK = 16
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


def decode(path: Path, size: int) -> np.ndarray:
    """Decode one image to uint8 ``[3, size, size]``; raises what PIL raises for a bad file."""
    with Image.open(path) as opened:
        image = opened.convert("RGB")  # convert() forces a full decode, so truncation surfaces here
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    # Pillow's resize widens the filter support when shrinking, i.e. it is antialiased.
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def _decode_or_reason(job: tuple[Path, int]) -> tuple[np.ndarray | None, str | None]:
    path, size = job
    try:
        return decode(path, size), None
    except DECODE_ERRORS as error:
        return None, f"{type(error).__name__}: {error}"


def default_workers() -> int:
    """Every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(
    paths: Sequence[Path],
    size: int,
    out: np.ndarray | None = None,
    *,
    desc: str = "decoding",
    workers: int | None = None,
) -> list[str]:
    """Decode ``paths`` into ``out[i]`` (or only test them when ``out`` is None).

    Returns one ``"<path>: <reason>"`` per file that could not be decoded, so a caller can report
    every bad file at once instead of stopping at the first.
    """
    workers = default_workers() if workers is None else workers
    jobs = [(Path(p), size) for p in paths]
    with tqdm(total=len(jobs), desc=desc, unit="img") as bar:
        if workers > 1 and len(jobs) >= POOL_THRESHOLD:
            # forkserver: safe even when the caller already runs threads (torch, BLAS).
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                results = pool.map(_decode_or_reason, jobs, chunksize=CHUNK)
                failures = _collect(results, jobs, out, bar)
        else:
            failures = _collect(map(_decode_or_reason, jobs), jobs, out, bar)
    return failures


def _collect(
    results: Iterable[tuple[np.ndarray | None, str | None]],
    jobs: list[tuple[Path, int]],
    out: np.ndarray | None,
    bar: tqdm,
) -> list[str]:
    """Store decoded arrays in input order and gather the failures, advancing the progress bar."""
    failures = []
    for index, (array, reason) in enumerate(results):
        if reason is not None:
            failures.append(f"{jobs[index][0]}: {reason}")
        elif out is not None:
            out[index] = array
        bar.update()
    return failures
