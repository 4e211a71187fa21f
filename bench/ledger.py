"""What lets a sweep be rerun safely: per-config locks, resumable checkpoints, and their location.

A run's identity is its config hash. While a process runs a configuration it holds an exclusive
``flock`` on ``locks/<hash>.lock``; the kernel releases it when the process ends, even on SIGKILL,
so a second ``bench run`` over the same sweep skips what is in progress and a dead worker's run
becomes claimable at once. Checkpoints are written atomically at the end of every epoch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from bench.checkpoint import save_atomic
from bench.errors import BenchError


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
        save_atomic(state, self.checkpoint_path(config_hash))

    def load(self, config_hash: str, config: dict) -> dict | None:
        """The checkpoint of this configuration, or None; refuses one written for another config."""
        path = self.checkpoint_path(config_hash)
        if not path.is_file():
            return None
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("config") != config:
            differing = sorted(_differing_keys(state.get("config") or {}, config))
            raise BenchError(f"checkpoint {path} belongs to another configuration (differs in {', '.join(differing)})")
        return state

    def discard(self, config_hash: str) -> None:
        self.checkpoint_path(config_hash).unlink(missing_ok=True)


def _differing_keys(a: dict, b: dict, prefix: str = "") -> set[str]:
    keys = set()
    for key in set(a) | set(b):
        left, right = a.get(key), b.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            keys |= _differing_keys(left, right, f"{prefix}{key}.")
        elif left != right:
            keys.add(f"{prefix}{key}")
    return keys
