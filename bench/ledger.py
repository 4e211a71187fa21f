"""What lets a sweep be rerun safely: per-config locks, resumable checkpoints, and their location.

A run's identity is its config hash. While a process runs a configuration it holds an exclusive
``flock`` on ``locks/<hash>.lock``; the kernel releases it when the process ends, even on SIGKILL,
so a second ``bench run`` over the same sweep skips what is in progress and a dead worker's run
becomes claimable at once. Checkpoints are written atomically at the end of every epoch and read
back as plain data only; one that cannot be read is set aside and its run starts over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench.checkpoint import check_plain, load_plain, save_atomic
from bench.errors import BenchError

CHECKPOINT_KEYS = ("trainer", "epoch", "run_id", "config")
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


class CheckpointNotWritten(OSError):
    """Writing a checkpoint failed (disk full, read-only, ...); the previous checkpoint is intact."""


@dataclass(frozen=True)
class Ledger:
    root: Path

    def checkpoint_path(self, config_hash: str) -> Path:
        return self.root / "checkpoints" / f"{config_hash}.pt"

    @contextlib.contextmanager
    def claim(self, config_hash: str, *, wait: bool = False) -> Iterator[bool]:
        """Yields True when this process now owns the configuration, False when another one does;
        with ``wait``, blocks until the other process is done with it (or dead) and then owns it."""
        path = self.root / "locks" / f"{config_hash}.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def save(self, config_hash: str, state: dict) -> None:
        check_plain(state)
        try:
            save_atomic(state, self.checkpoint_path(config_hash))
        except OSError as exc:
            raise CheckpointNotWritten(exc.errno, exc.strerror or str(exc), exc.filename) from exc

    def load(self, config_hash: str, config: dict) -> dict | None:
        """The checkpoint of this configuration, or None (none yet, or one that could not be read and
        was set aside); refuses one written for another config."""
        path = self.checkpoint_path(config_hash)
        if not path.is_file():
            return None
        try:
            state = load_plain(path)
        except OSError as exc:
            raise BenchError(f"cannot read checkpoint {path} ({exc.strerror or exc})") from None
        except Exception as exc:  # truncated, random bytes, or objects a checkpoint never holds
            _set_aside(path, exc)
            return None
        if isinstance(state, dict) and isinstance(state.get("config"), dict) and state["config"] != config:
            differing = sorted(_differing_keys(state["config"], config))
            raise BenchError(f"checkpoint {path} belongs to another configuration (differs in {', '.join(differing)})")
        if not isinstance(state, dict) or any(key not in state for key in CHECKPOINT_KEYS):
            _set_aside(path, ValueError(f"not a checkpoint: it lacks one of {', '.join(CHECKPOINT_KEYS)}"))
            return None
        return state

    def discard(self, config_hash: str) -> None:
        """The configuration's checkpoint, and what writes of it a killed process left half done."""
        path = self.checkpoint_path(config_hash)
        path.unlink(missing_ok=True)
        for partial in path.parent.glob(f".{path.name}.*.tmp"):  # save_atomic's temporary names
            partial.unlink(missing_ok=True)


def _set_aside(path: Path, exc: Exception) -> None:
    """Keep an unreadable checkpoint for inspection under a name that says so, out of the way of every
    later rerun (which would otherwise fail on it again), and say so in one line."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    path.rename(aside)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch's weights-only refusal names the foreign object on a line of its own, after advice to
    # load the file with weights_only=False, which is exactly what must not be done with it.
    detail = next((line for line in lines if "GLOBAL" in line), lines[0] if lines else "")
    print(
        f"bench: checkpoint {path} cannot be loaded ({type(exc).__name__}: {detail[:200]}); "
        f"set aside as {aside.name}, its run restarts from epoch 0",
        file=sys.stderr,
        flush=True,
    )


def write_failure(exc: OSError) -> str:
    """What went wrong in a failed write and what to do about it: free space only when space ran out."""
    reason = (exc.strerror or type(exc).__name__) + (f": {exc.filename}" if exc.filename else "")
    if exc.errno in DISK_FULL:
        remedy = "free space"
    elif exc.errno in NOT_WRITABLE:
        remedy = f"make {Path(exc.filename).parent if exc.filename else 'the state folder'} writable"
    else:
        remedy = "fix that"
    return f"cannot write ({reason}); the last checkpoint is kept, {remedy} and rerun to resume"


def _differing_keys(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(a) | set(b):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys |= _differing_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.add(f"{prefix}{key}")
    return keys
