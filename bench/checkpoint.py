"""Checkpoints written atomically: a crash mid-write never leaves a truncated file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch


def save_atomic(state: dict[str, Any], path: Path) -> Path:
    """Write to a temporary file in the same directory, fsync, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        # torch's zip writer turns a failed write (disk full) into a RuntimeError about file positions;
        # the OSError underneath is what the caller and the user need to see.
        if isinstance(exc, RuntimeError) and isinstance(exc.__context__, OSError):
            raise exc.__context__ from None
        raise
    return path
