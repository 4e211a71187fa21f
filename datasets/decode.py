"""Turning image files into fixed-size uint8 arrays, in parallel when that pays, reporting files that fail.

One decode rule for every dataset (RGB, shorter side to S with antialiased bilinear, centre crop),
so a cached array and a freshly decoded one are byte-identical.

16-bit greyscale (Pillow modes ``I;16*`` and ``I``) keeps its high byte: Pillow's ``convert`` would clip
it to 0..255 and turn nearly every pixel white. The high byte is what Pillow itself keeps for 16-bit
colour PNGs, so one picture gives the same bytes whether stored as 16-bit grey or 16-bit RGB. No
per-image stretch: that would make intensities incomparable between images (a 12-bit image stored in
16 bits therefore stays dark, as in any viewer).
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

# Below this many files a process pool costs more than it saves.
POOL_THRESHOLD = 64
# A pool costs about this long to start (each worker is a fresh interpreter importing NumPy and Pillow),
# which for small images is more than decoding takes: 256 px JPEGs decode in ~2 ms each, so a subset of
# a few hundred images was 3x slower pooled. The first PROBE files are therefore decoded serially and
# timed, and a pool is started only if it would save more than it costs (full-size dermoscopy: ~0.1 s
# per image, so it does).
POOL_STARTUP_SECONDS = 0.5
PROBE = 16
# Files per inter-process message: large enough to amortise pickling, small enough for a live bar.
CHUNK = 16
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# Greyscale modes wider than 8 bit; ``I`` (32-bit) is how some Pillow versions open 16-bit PNGs.
WIDE_GREY_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def decode(path: Path, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image to uint8 ``[3, size, size]``, with the file's own ``(width, height)`` (which
    the checker needs to flag degenerate images); raises what PIL raises for a bad file."""
    with Image.open(path) as opened:
        image = _rgb(opened)
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    # Pillow's resize widens the filter support when shrinking, i.e. it is antialiased.
    image = image.resize(new_size, Image.Resampling.BILINEAR)
    left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)), (width, height)


def _rgb(image: Image.Image) -> Image.Image:
    """The fully decoded image in RGB (both ``convert`` and ``asarray`` read every pixel, so a
    truncated file fails here); wide greyscale keeps its high byte (see the module docstring)."""
    if image.mode in WIDE_GREY_MODES:
        high = np.asarray(image).astype(np.int64).clip(0, 65535) >> 8
        image = Image.fromarray(high.astype(np.uint8))
    return image.convert("RGB")


def _decode_or_reason(job: tuple[Path, int]) -> tuple[np.ndarray | None, tuple[int, int], str | None]:
    path, size = job
    try:
        return *decode(path, size), None
    except DECODE_ERRORS as error:
        return None, (0, 0), f"{type(error).__name__}: {error}"


def default_workers() -> int:
    """Every core this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(
    paths: Sequence[Path],
    size: int,
    out: np.ndarray | None = None,
    *,
    sizes: np.ndarray | None = None,
    desc: str = "decoding",
    workers: int | None = None,
) -> list[str]:
    """Decode ``paths`` into ``out[i]`` (or only test them when ``out`` is None), and each file's own
    ``(width, height)`` into ``sizes[i]`` when given (left as is for files that fail). Up to
    ``workers`` processes, only when they pay for their start-up (see ``POOL_STARTUP_SECONDS``).

    Returns one ``"<path>: <reason>"`` per file that could not be decoded, so a caller can report
    every bad file at once instead of stopping at the first.
    """
    workers = default_workers() if workers is None else workers
    jobs = [(Path(p), size) for p in paths]
    with tqdm(total=len(jobs), desc=desc, unit="img") as bar:
        probe = jobs[:PROBE] if workers > 1 and len(jobs) >= POOL_THRESHOLD else jobs
        started = time.perf_counter()
        failures = _collect(map(_decode_or_reason, probe), jobs, 0, out, sizes, bar)
        rest = len(jobs) - len(probe)
        serial_rest = (time.perf_counter() - started) / max(len(probe), 1) * rest
        if rest and serial_rest * (1 - 1 / workers) > POOL_STARTUP_SECONDS:
            # forkserver: safe even when the caller already runs threads (torch, BLAS).
            context = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                results = pool.map(_decode_or_reason, jobs[len(probe) :], chunksize=CHUNK)
                failures += _collect(results, jobs, len(probe), out, sizes, bar)
        elif rest:
            failures += _collect(map(_decode_or_reason, jobs[len(probe) :]), jobs, len(probe), out, sizes, bar)
    return failures


def _collect(
    results: Iterable[tuple[np.ndarray | None, tuple[int, int], str | None]],
    jobs: list[tuple[Path, int]],
    start: int,
    out: np.ndarray | None,
    sizes: np.ndarray | None,
    bar: tqdm,
) -> list[str]:
    """Store the decoded arrays and sizes of ``jobs[start:]`` in input order and gather the failures,
    advancing the bar."""
    failures = []
    for index, (array, source_size, reason) in enumerate(results, start):
        if reason is not None:
            failures.append(f"{jobs[index][0]}: {reason}")
        else:
            if out is not None:
                out[index] = array
            if sizes is not None:
                sizes[index] = source_size
        bar.update()
    return failures
