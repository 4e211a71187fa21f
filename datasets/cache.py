"""Decode once: one read-only uint8 memmap ``[N, 3, S, S]`` per (dataset, split, resolution).

The key hashes every file's name, size and mtime with the split and S, so editing, adding or
removing an image builds a fresh cache, while an unchanged split opens in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from datasets.decode import decode_all

# Bump when the decode rule changes so that old caches stop matching.
DECODE_VERSION = 1


class DecodeFailures(Exception):
    """Some images could not be decoded; ``failures`` holds one ``"<path>: <reason>"`` each."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"{len(failures)} image(s) could not be decoded")
        self.failures = failures


def cache_root(cache_dir: Path | None = None) -> Path:
    """``cache_dir``, else ``$BENCH_CACHE_DIR``, else the XDG cache home."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("BENCH_CACHE_DIR"):
        return Path(os.environ["BENCH_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fgssl-bench"


def cache_path(dataset: str, split: str, paths: Sequence[Path], size: int, cache_dir: Path | None = None) -> Path:
    """Where the cache for exactly these files lives; stats every file (cheap next to decoding)."""
    digest = hashlib.sha256(f"v{DECODE_VERSION}|{dataset}|{split}|{size}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"|{Path(path).name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return cache_root(cache_dir) / f"{dataset}-{split}-{size}px-{digest.hexdigest()[:20]}.npy"


def cached_images(
    dataset: str,
    split: str,
    paths: Sequence[Path],
    size: int,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """The decoded split as a read-only memmap, decoding only when no valid cache exists.

    Raises ``DecodeFailures`` (and writes nothing) when any image cannot be decoded.
    """
    target = cache_path(dataset, split, paths, size, cache_dir)
    shape = (len(paths), 3, size, size)
    existing = _open(target, shape)
    if existing is not None:
        return existing
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the target and rename: readers never see a half-written file, even across processes.
    partial = target.with_name(f"{target.stem}.{uuid.uuid4().hex}.partial.npy")
    try:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        failures = decode_all(paths, size, out, desc=f"{dataset} {split} @{size}px", workers=workers)
        out.flush()
        del out
        if failures:
            raise DecodeFailures(failures)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return _open(target, shape)


def _open(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    """Open a finished cache read-only; None when absent or not the expected array (then rebuilt)."""
    if not path.is_file():
        return None
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    return array if array.shape == shape and array.dtype == np.uint8 else None
