"""Decode once: one read-only uint8 memmap ``[N, 3, S, S]`` per (dataset, split, resolution).

The key hashes every file's name, size and mtime with the split and S, so editing, adding or
removing an image builds a fresh cache, while an unchanged split opens in milliseconds.

Each cache file is a plain ``.npy`` followed by an integrity record: JSON (pixel byte count, SHA-256
of the pixels, each source image's width and height), then its length and ``RECORD_TAG``. NumPy ignores
bytes after the array, so the file memory-maps as before, and data and record reach disk together in
one rename (a sidecar file would need two, with a window where they disagree).

Every open, not only ``data check``, checks the file size and the pixel checksum: checking less
would let a run train silently on pixels zeroed since the last check. SHA-256 (about 1.7 GB/s with
SHA-NI) added ~25 ms to a warm load of the full ISIC 2017 at 64 px (34 MB: ~50 -> ~75 ms) and ~250 ms
at 224 px (414 MB: ~45 -> ~295 ms), paid once per process, next to seconds to minutes of decoding;
training reads every page anyway. A file that fails is rebuilt, with a note naming it and why.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datasets.decode import decode_all

# Bump when the decode rule or the file layout changes so that old caches stop matching.
# 2: integrity record after the array; 16-bit greyscale keeps its high byte instead of clipping.
DECODE_VERSION = 2
RECORD_TAG = b"FGSSLREC"
# The last bytes of a cache file: the record's length, then RECORD_TAG.
TAIL = struct.Struct("<Q8s")


class DecodeFailures(Exception):
    """Some images could not be decoded; ``failures`` holds one ``"<path>: <reason>"`` each."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__(f"{len(failures)} image(s) could not be decoded")
        self.failures = failures


@dataclass(frozen=True)
class CachedSplit:
    """A split's decoded images, each source file's own ``(width, height)`` (to flag degenerate
    images without reopening them) and, when a cache file was present but failed its integrity
    check, a one-line note naming it and why it was rebuilt."""

    images: np.ndarray
    sizes: np.ndarray
    rebuilt: str | None = None


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


def cached_split(
    dataset: str,
    split: str,
    paths: Sequence[Path],
    size: int,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> CachedSplit:
    """The decoded split, from a cache that passes its integrity check or else decoded afresh.

    Raises ``DecodeFailures`` (and writes nothing) when any image cannot be decoded.
    """
    target = cache_path(dataset, split, paths, size, cache_dir)
    shape = (len(paths), 3, size, size)
    found, fault = _verified(target, shape)
    if found is not None:
        return found
    sizes = _build(target, paths, shape, f"{dataset} {split} @{size}px", workers)
    note = f"decoded cache {target} failed its integrity check ({fault}); rebuilt it" if fault else None
    return CachedSplit(np.load(target, mmap_mode="r"), sizes, note)


def cached_images(
    dataset: str,
    split: str,
    paths: Sequence[Path],
    size: int,
    cache_dir: Path | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Just the images of ``cached_split``, warning when a faulty cache file was rebuilt."""
    cached = cached_split(dataset, split, paths, size, cache_dir, workers)
    if cached.rebuilt:
        warnings.warn(cached.rebuilt, stacklevel=2)
    return cached.images


def _verified(path: Path, shape: tuple[int, ...]) -> tuple[CachedSplit | None, str | None]:
    """The cache at ``path`` if it is sound; else None and what is wrong (None too if it is absent)."""
    try:
        with path.open("rb") as handle:
            total = os.fstat(handle.fileno()).st_size
            if total < TAIL.size:
                return None, "zero-length file" if total == 0 else f"only {total} bytes"
            handle.seek(total - TAIL.size)
            length, tag = TAIL.unpack(handle.read(TAIL.size))
            if tag != RECORD_TAG or length > total - TAIL.size:
                return None, "does not end with its integrity record: cut short, appended to, or from another version"
            handle.seek(total - TAIL.size - length)
            record = handle.read(length)
        images = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, EOFError) as error:
        return None, f"unreadable: {type(error).__name__}: {error}"
    if images.shape != shape or images.dtype != np.uint8:
        return None, f"holds {images.dtype} {images.shape}, expected uint8 {shape}"
    expected = images.offset + images.nbytes + length + TAIL.size
    if total != expected:
        return None, f"{total} bytes, expected {expected} from its header and record"
    try:
        pixel_bytes, checksum, sizes = _parse(record, len(images))
    except (ValueError, KeyError, TypeError) as error:
        return None, f"unreadable integrity record: {type(error).__name__}: {error}"
    if pixel_bytes != images.nbytes or checksum != _checksum(images):
        return None, "pixel checksum does not match its record: the pixels changed after it was written"
    return CachedSplit(images, sizes), None


def _parse(record: bytes, count: int) -> tuple[int, str, np.ndarray]:
    """Pixel byte count, checksum and ``[count, 2]`` sizes; raises for anything malformed."""
    fields = json.loads(record)
    sizes = np.asarray(fields["sizes"], dtype=np.int64).reshape(count, 2)
    return int(fields["pixel_bytes"]), str(fields["sha256"]), sizes


def _checksum(images: np.ndarray) -> str:
    return hashlib.sha256(images).hexdigest()  # the buffer of a C-ordered array, without a copy


def _build(target: Path, paths: Sequence[Path], shape: tuple[int, ...], desc: str, workers: int | None) -> np.ndarray:
    """Decode into a temporary file, append its record, fsync, rename over ``target``, fsync the folder.

    Readers never see a half-written file, even across processes, and after a crash the cache is
    either the old file, the new one, or absent. Returns each source image's ``(width, height)``.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.stem}.{uuid.uuid4().hex}.partial.npy")
    sizes = np.zeros((shape[0], 2), dtype=np.int64)
    try:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=shape)
        failures = decode_all(paths, shape[-1], out, sizes=sizes, desc=desc, workers=workers)
        out.flush()
        del out
        if failures:
            raise DecodeFailures(failures)
        written = np.load(partial, mmap_mode="r")  # the checksum covers the bytes in the file
        fields = {"pixel_bytes": written.nbytes, "sha256": _checksum(written), "sizes": sizes.tolist()}
        del written
        record = json.dumps(fields, separators=(",", ":")).encode()
        with partial.open("ab") as handle:
            handle.write(record + TAIL.pack(len(record), RECORD_TAG))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, target)
        _fsync_folder(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return sizes


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable: without this a crash can lose the new directory entry."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
