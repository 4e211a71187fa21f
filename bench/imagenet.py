"""ImageNet weights by name (``--weights imagenet``): torchvision's published ResNet weights, fetched once
into torch's hub cache and from then on used like a local ``--weights PATH`` file.

``imagenet`` is torchvision's ``IMAGENET1K_V1``, the weights the paper's authors started from;
``imagenet-v2`` is ``IMAGENET1K_V2`` (a later, stronger recipe; ResNet-50 only). The file is kept
where torchvision keeps it, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``),
under torchvision's name (``resnet50-0676ba61.pth``), so torchvision and this harness share one copy.
A file found there is used as it is: its sha256, as for any weights file, is the run's identity.

A missing file is downloaded with torch.hub's downloader, which writes a temporary file next to the
target and moves it into place only when its sha256 matches: the prefix in torchvision's file name, or
the full ``model.weights_sha256`` when the config pins one. ``$BENCH_WEIGHTS_MIRROR`` replaces
torchvision's ``https://download.pytorch.org/models`` with a mirror serving the same file names; a
mirror of other bytes (the tests' generated weights) needs the pinned sha256, since no file but
torchvision's matches the prefix in its name.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import socket
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision import models

from bench.errors import BenchError
from methods.backbones import BACKBONES

NAMED: dict[str, str] = {"imagenet": "IMAGENET1K_V1", "imagenet-v2": "IMAGENET1K_V2"}
MIRROR_ENV = "BENCH_WEIGHTS_MIRROR"
TIMEOUT_SECONDS = 60  # per connection attempt or read; torch.hub's downloader sets none


@dataclass(frozen=True)
class NamedWeights:
    """One torchvision weights entry: where it is published and where this machine keeps it."""

    spelling: str
    backbone: str
    url: str

    @property
    def file_name(self) -> str:
        return Path(urllib.parse.urlsplit(self.url).path).name

    @property
    def folder(self) -> Path:
        return Path(torch.hub.get_dir()) / "checkpoints"

    @property
    def path(self) -> Path:
        return self.folder / self.file_name

    @property
    def hash_prefix(self) -> str:
        """The leading hex digits of the file's sha256 that torchvision puts in its name."""
        found = re.search(r"-([a-f0-9]+)\.", self.file_name)
        if found is None:
            raise BenchError(f"torchvision's file name {self.file_name} carries no sha256 prefix to check it against")
        return found.group(1)

    def download_url(self) -> str:
        mirror = os.environ.get(MIRROR_ENV, "").strip()
        return f"{mirror.rstrip('/')}/{self.file_name}" if mirror else self.url


def is_named(weights: str | None) -> bool:
    return weights in NAMED


def named_weights(spelling: str, backbone: str) -> NamedWeights:
    """The torchvision entry ``spelling`` means for ``backbone``; one line when torchvision has none."""
    if backbone not in BACKBONES:
        raise BenchError(f"unknown backbone {backbone!r}; valid: {', '.join(BACKBONES)}")
    published = models.get_model_weights(BACKBONES[backbone][0]).__members__
    if NAMED[spelling] not in published:
        valid = [name for name, entry in NAMED.items() if entry in published]
        raise BenchError(
            f"torchvision publishes no {NAMED[spelling]} weights for {backbone} (--weights {spelling}); "
            f"valid for {backbone}: {', '.join(valid)}"
        )
    return NamedWeights(spelling, backbone, published[NAMED[spelling]].url)


def local_file(weights: str, backbone: str) -> str:
    """The file that ``weights`` (a path, or a name that was fetched when the config was resolved) reads."""
    return str(named_weights(weights, backbone).path) if is_named(weights) else weights


def fetch(named: NamedWeights, expected_sha256: str | None = None) -> Path:
    """The cached file, downloaded first if missing (a progress bar on a terminal, one line once it is
    in place; nothing before, so a failure is one line). Nothing but a verified, complete file is ever
    left in the cache: a failed download removes its temporary file and the folders it created."""
    if named.path.is_file():
        return named.path
    url = named.download_url()
    created = [folder for folder in (named.folder, *named.folder.parents) if not folder.exists()]
    try:
        named.folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(
            f"cannot create torch's hub cache {named.folder} for {named.file_name}: {exc.strerror}"
        ) from None
    checked_against = "model.weights_sha256" if expected_sha256 else "the sha256 prefix in torchvision's file name"
    try:
        with _socket_timeout(TIMEOUT_SECONDS):
            torch.hub.download_url_to_file(
                url, str(named.path), hash_prefix=expected_sha256 or named.hash_prefix, progress=sys.stderr.isatty()
            )
    except RuntimeError as exc:  # torch.hub's refusal of a file whose sha256 does not match
        _remove_empty(created)
        raise BenchError(
            f"{named.file_name} downloaded from {url} is refused, {exc} against {checked_against}; nothing was kept"
        ) from None
    except (OSError, http.client.HTTPException) as exc:
        _remove_empty(created)
        raise BenchError(
            f"ImageNet weights {named.file_name} are not in {named.folder} and cannot be downloaded from {url} "
            f"({_reason(exc)}): put {named.file_name} into {named.folder} (torch's hub cache; TORCH_HOME moves it), "
            "or give --weights PATH"
        ) from None
    size = named.path.stat().st_size / 2**20
    print(
        f"bench: downloaded {named.file_name} ({size:.0f} MiB, sha256 checked) from {url} into {named.folder}",
        file=sys.stderr,
    )
    return named.path


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """A timeout for the sockets torch.hub opens (it passes none), so a dead network fails instead of hanging."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"the server answered HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        if isinstance(exc.reason, socket.gaierror):
            return "cannot resolve the host name: offline?"
        if isinstance(exc.reason, ConnectionRefusedError):
            return "connection refused: nothing listens there"
        return str(exc.reason)
    if isinstance(exc, TimeoutError):
        return f"no answer within {TIMEOUT_SECONDS} s"
    return str(exc) or type(exc).__name__
