"""Checkpoints written atomically (a crash mid-write never leaves a truncated file behind) and read
back without running code: ``torch.load(weights_only=True)`` rebuilds tensors and plain data only, so
a file planted where a checkpoint is expected cannot execute anything as the user of ``bench run``."""

from __future__ import annotations

import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

_PLAIN_LEAVES = (str, int, float, bool, type(None))
_PLAIN_MAPPINGS = (dict, OrderedDict)
_PLAIN_SEQUENCES = (list, tuple)


def check_plain(value: Any, where: str = "checkpoint") -> None:
    """Refuse what ``load_plain`` could not read back (a numpy scalar, a dataclass, any object): such a
    checkpoint would be written every epoch, then set aside as unreadable at every resume. Exact types,
    because ``numpy.float64`` is a ``float`` subclass that pickles as a numpy object."""
    if isinstance(value, torch.Tensor):
        return
    if type(value) in _PLAIN_MAPPINGS:
        for key, item in value.items():
            check_plain(key, f"a key of {where}")
            check_plain(item, f"{where}[{key!r}]")
    elif type(value) in _PLAIN_SEQUENCES:
        for index, item in enumerate(value):
            check_plain(item, f"{where}[{index}]")
    elif type(value) not in _PLAIN_LEAVES:
        raise TypeError(f"{where} is a {type(value).__qualname__}; a checkpoint holds tensors and plain data only")


def load_plain(path: Path) -> Any:
    """Tensors, dicts, lists, tuples, str, numbers, bool and None; any other object in the file
    (a pickled callable, as a planted file would hold) raises instead of being built."""
    return torch.load(path, map_location="cpu", weights_only=True)


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
