"""Backbones that start from a weights file: ``--weights PATH``, or a name (``--weights imagenet``) that
bench/imagenet.py fetched into torch's hub cache when the config was resolved.

The file is a torchvision-format state dict of the configured ResNet (``torch.save(model.state_dict())``
of ``torchvision.models.resnet18()``, say; the ``fc`` classifier may be present). It is identified by
its sha256, which goes into the run's params, tags and config hash; its path (or name) does not.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch

from bench.errors import BenchError
from bench.imagenet import local_file
from methods.backbones import BACKBONES, Backbone


def file_sha256(path: str | Path) -> str:
    """The file's sha256 (hex); a clear error when it is missing. Memoised per (path, size, mtime)."""
    try:
        stat = os.stat(Path(path).expanduser())
    except OSError as exc:
        raise BenchError(f"weights file {path} cannot be read: {exc.strerror}") from None
    if not Path(path).expanduser().is_file():
        raise BenchError(f"weights file {path} is not a file")
    return _sha256(str(Path(path).expanduser().resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_weights(weights: str, backbone: str, sha256: str) -> None:
    """Refuse, in one line, a file that is not a state dict of ``backbone`` (keys and shapes), before
    any run is logged. ``sha256`` keys the memo, so a file is read once per sweep."""
    _check(str(Path(local_file(weights, backbone)).expanduser()), backbone, sha256)


@functools.lru_cache(maxsize=16)
def _check(path: str, backbone: str, sha256: str) -> None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load fails in many ways on a file that is not a state dict
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BenchError(f"weights file {path} is not a torchvision state dict ({first_line})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BenchError(
            f"weights file {path} is not a torchvision state dict (expected a mapping of names to tensors, "
            f"as torch.save(model.state_dict()) writes)"
        )
    expected = {k: tuple(v.shape) for k, v in BACKBONES[backbone][0](weights=None).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s) (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s) (e.g. {unexpected[0]})")
    if wrong:
        key = wrong[0]
        problems.append(
            f"{len(wrong)} shape mismatch(es) (e.g. {key}: file {list(found[key])}, {backbone} {list(expected[key])})"
        )
    if problems:
        raise BenchError(f"weights file {path} does not match {backbone}: {'; '.join(problems)}")


def build_backbone(name: str, stem: str, weights: str | None, sha256: str | None) -> Backbone:
    """The run's backbone: initialised from the seeded RNG, then from the weights file when given.

    With ``stem="small"`` the file's ``conv1`` is replaced by the small stem's fresh 3x3 convolution
    (its shape differs); every other tensor comes from the file.
    """
    if weights is None:
        return Backbone(name, stem)
    weights = local_file(weights, name)
    digest = file_sha256(weights)
    if sha256 is not None and digest != sha256:
        raise BenchError(f"weights file {weights} changed since the run was configured (sha256 {digest}, not {sha256})")
    check_weights(weights, name, digest)
    return Backbone(name, stem, weights=Path(weights).expanduser())
