"""Fetch the official ISIC archives into the layout the readers expect, with resume and integrity checks.

Downloads stream into ``root/.downloads/<file>.part`` so an interrupted transfer resumes with an HTTP
``Range`` request. Archives are checked (CRC of every member, expected number of images), extracted
into a scratch folder and renamed into place, so the official layout never holds a half-extracted
folder. A ``<file>.done`` marker makes re-running skip finished files. APTOS 2019 lives behind a
Kaggle login, so it is explained rather than downloaded.

Offline, a failed connection (DNS, refused, unreachable, timeout) or an HTTP error status is one line:
what failed and what to do instead (the files by hand into ``root/.downloads/``, which a rerun uses as
they are, or a mirror). A failed call removes the folders it created and empty part files, keeping
only what holds received data, which the next run resumes.
"""

from __future__ import annotations

import errno
import http.client
import json
import re
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from datasets.base import DatasetError
from datasets.registry import unknown_name

OFFICIAL_BASE_URL = "https://isic-challenge-data.s3.amazonaws.com"
CHUNK_BYTES = 1 << 20
TIMEOUT_SECONDS = 60

APTOS_HELP = (
    "aptos2019 cannot be downloaded by this tool: it is the Kaggle competition "
    "'aptos2019-blindness-detection', which needs a Kaggle account that has accepted the competition rules. "
    "Install the Kaggle CLI, put your API token in ~/.kaggle/kaggle.json, then run "
    "'kaggle competitions download -c aptos2019-blindness-detection' and unzip the archive so that "
    "train.csv and train_images/ sit directly in the data root."
)


@dataclass(frozen=True)
class RemoteFile:
    """One published file. A ``.zip`` must unpack to a folder named like itself holding ``images`` .jpg files."""

    name: str
    images: int = 0

    @property
    def is_archive(self) -> bool:
        return self.name.endswith(".zip")

    @property
    def target(self) -> str:
        """What the file becomes under the data root: the archive's folder, or the file itself."""
        return self.name.removesuffix(".zip")


@dataclass(frozen=True)
class Manifest:
    """Where a dataset's files live under the base URL, and what each must contain."""

    dataset: str
    folder: str
    files: tuple[RemoteFile, ...]


MANIFESTS: dict[str, Manifest] = {
    "isic2017": Manifest(
        "isic2017",
        "2017",
        (
            RemoteFile("ISIC-2017_Training_Data.zip", 2000),
            RemoteFile("ISIC-2017_Validation_Data.zip", 150),
            RemoteFile("ISIC-2017_Test_v2_Data.zip", 600),
            RemoteFile("ISIC-2017_Training_Part3_GroundTruth.csv"),
            RemoteFile("ISIC-2017_Validation_Part3_GroundTruth.csv"),
            RemoteFile("ISIC-2017_Test_v2_Part3_GroundTruth.csv"),
        ),
    ),
    "isic2018": Manifest(
        "isic2018",
        "2018",
        (
            RemoteFile("ISIC2018_Task3_Training_Input.zip", 10015),
            RemoteFile("ISIC2018_Task3_Validation_Input.zip", 193),
            RemoteFile("ISIC2018_Task3_Test_Input.zip", 1512),
            RemoteFile("ISIC2018_Task3_Training_GroundTruth.zip"),
            RemoteFile("ISIC2018_Task3_Validation_GroundTruth.zip"),
            RemoteFile("ISIC2018_Task3_Test_GroundTruth.zip"),
            RemoteFile("ISIC2018_Task3_Training_LesionGroupings.csv"),
        ),
    ),
}


class NoAnswer(DatasetError):
    """The server could not be reached or answered with an error status: nothing was received."""


@dataclass
class DownloadSummary:
    """What one call did per file, so the CLI can tell the user and tests can assert it."""

    dataset: str
    root: Path
    downloaded: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.dataset} in {self.root}: downloaded {len(self.downloaded)}, "
            f"resumed {len(self.resumed)}, already complete {len(self.skipped)}"
        )


def download_dataset(
    name: str,
    root: Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> DownloadSummary:
    """Download, verify and unpack dataset ``name`` into ``root``; safe to re-run after any interruption.

    ``manifest`` replaces the official one (tests and mirrors with other contents); ``base_url`` replaces
    the official S3 bucket. Raises ``DatasetError`` with the file or URL at fault.
    """
    if name == "aptos2019":
        raise DatasetError(APTOS_HELP)
    if manifest is None:
        if name not in MANIFESTS:
            raise DatasetError(unknown_name(name, [*MANIFESTS, "aptos2019"]))
        manifest = MANIFESTS[name]
    root = Path(root)
    downloads = root / ".downloads"
    pending = [f for f in manifest.files if not _is_complete(f, root)]
    for file in pending:
        if (root / file.target).exists():
            raise DatasetError(
                f"{root / file.target} exists but was not made by this download; move it away and run again"
            )
    created = [folder for folder in (downloads, *downloads.parents) if not folder.exists()]
    downloads.mkdir(parents=True, exist_ok=True)
    summary = DownloadSummary(name, root, skipped=[f.name for f in manifest.files if f not in pending])
    try:
        _download(manifest, pending, root, (base_url or OFFICIAL_BASE_URL).rstrip("/"), progress, summary)
    except BaseException:
        _tidy(downloads, manifest, created)
        raise
    return summary


def _download(
    manifest: Manifest, pending: list[RemoteFile], root: Path, base: str, progress: bool, summary: DownloadSummary
) -> None:
    """Fetch, verify and unpack each pending file in turn, recording each in ``summary``."""
    downloads = root / ".downloads"
    for position, file in enumerate(pending):
        fetched = downloads / file.name
        url = f"{base}/{manifest.folder}/{file.name}"
        try:
            status = "resumed" if fetched.exists() else _fetch(url, fetched, progress)
        except NoAnswer as failed:
            raise DatasetError(f"{failed}; {_by_hand(manifest, pending[position:], downloads)}") from None
        size = fetched.stat().st_size
        if file.is_archive:
            images = _verify_archive(fetched, file)
            unpacked = _extract(fetched, file)
        else:
            images, unpacked = 0, fetched
        # Marker before the move: a crash in between leaves the fetched file, which the next run reuses.
        (downloads / f"{file.name}.done").write_text(json.dumps({"bytes": size, "images": images}) + "\n")
        unpacked.replace(root / file.target)
        if file.is_archive:
            shutil.rmtree(unpacked.parent)
            fetched.unlink()
        (summary.resumed if status == "resumed" else summary.downloaded).append(file.name)


def _by_hand(manifest: Manifest, remaining: list[RemoteFile], downloads: Path) -> str:
    """The remedy when the host cannot be used: fetch the files elsewhere, or use a mirror."""
    names = ", ".join(file.name for file in remaining)
    return (
        f"to install without this connection, download {names} from {OFFICIAL_BASE_URL}/{manifest.folder}/ "
        f"by hand into {downloads}/ and run again (files found there are verified and unpacked), "
        f"or pass --base-url with a mirror of {OFFICIAL_BASE_URL}"
    )


def _tidy(downloads: Path, manifest: Manifest, created: list[Path]) -> None:
    """After a failure: drop part files that received nothing and the folders this call created, if empty."""
    for file in manifest.files:
        part = downloads / f"{file.name}.part"
        if part.is_file() and part.stat().st_size == 0:
            part.unlink()
    for folder in created:  # deepest first
        try:
            folder.rmdir()
        except OSError:
            break  # holds data worth keeping (and so do its parents)


def _is_complete(file: RemoteFile, root: Path) -> bool:
    return (root / ".downloads" / f"{file.name}.done").is_file() and (root / file.target).exists()


def _fetch(url: str, dest: Path, progress: bool) -> str:
    """Stream ``url`` to ``dest`` through a ``.part`` file, resuming it; returns "downloaded" or "resumed"."""
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:
            return _finish_after_416(url, part, dest, offset, err.headers.get("Content-Range", ""), progress)
        raise NoAnswer(f"cannot download {url}: the server answered HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise NoAnswer(f"cannot download {url}: {_connect_failure(err, url)}") from None
    with response:
        if response.status == 206:
            start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
            if start is None or int(start.group(1)) != offset:
                part.unlink()
                raise DatasetError(f"{url} answered the resume request with the wrong range; run again to restart")
        else:
            offset = 0  # the server ignored Range and sent the whole file
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        with (
            part.open("ab" if offset else "wb") as out,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not progress,
            ) as bar,
        ):
            while True:
                try:  # read1 hands over what has arrived, so a stall keeps it in the part file
                    chunk = response.read1(CHUNK_BYTES)
                except (OSError, http.client.HTTPException) as err:
                    raise DatasetError(
                        f"download of {url} stopped after {out.tell()} bytes ({_reason(err)}); run again to resume"
                    ) from None
                if not chunk:
                    break
                out.write(chunk)
                bar.update(len(chunk))
            received = out.tell()
    if total is not None and received != total:
        raise DatasetError(f"download of {url} stopped after {received} of {total} bytes; run again to resume")
    part.replace(dest)
    return "resumed" if offset else "downloaded"


def _finish_after_416(url: str, part: Path, dest: Path, offset: int, content_range: str, progress: bool) -> str:
    """A 416 to ``Range: bytes=N-`` means the part is complete only if the server says the file has N bytes."""
    if content_range == f"bytes */{offset}":
        part.replace(dest)
        return "resumed"
    part.unlink()
    return _fetch(url, dest, progress)


def _connect_failure(err: BaseException, url: str) -> str:
    """Why no connection was made, in words that suggest the cause."""
    cause = err.reason if isinstance(err, urllib.error.URLError) else err
    host = urllib.parse.urlsplit(url).netloc
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host name {host.split(':')[0]} (DNS lookup failed: offline, or a wrong host)"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {host} (nothing listens there)"
    if isinstance(cause, TimeoutError):
        return f"no answer from {host} within {TIMEOUT_SECONDS} s"
    if isinstance(cause, OSError) and cause.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return f"host {host} is unreachable (no route: offline?)"
    return _reason(err)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError):
        return str(err.reason)
    return str(err) or type(err).__name__


def _verify_archive(path: Path, file: RemoteFile) -> int:
    """Check every member's CRC and the image count; a bad archive is deleted so the next run fetches it again."""
    folder = f"{file.target}/"
    try:
        with zipfile.ZipFile(path) as archive:
            bad_member = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError) as err:
        path.unlink()
        raise DatasetError(f"{file.name} is not a readable zip archive ({err}); deleted it, run again") from None
    if bad_member is not None:
        path.unlink()
        raise DatasetError(f"{file.name} is corrupt: member {bad_member} fails its CRC check; deleted it, run again")
    if not any(n.startswith(folder) for n in names):
        path.unlink()
        raise DatasetError(f"{file.name} does not unpack to the folder {folder}; deleted it")
    images = sum(1 for n in names if n.startswith(folder) and n.lower().endswith(".jpg"))
    if images != file.images:
        path.unlink()
        raise DatasetError(f"{file.name} holds {images} .jpg images in {folder}, expected {file.images}; deleted it")
    return images


def _extract(path: Path, file: RemoteFile) -> Path:
    """Unpack beside the download and return the folder, so it can be renamed into place whole or not at all."""
    scratch = path.with_name(f"{file.target}.extracting")
    shutil.rmtree(scratch, ignore_errors=True)
    with zipfile.ZipFile(path) as archive:
        archive.extractall(scratch)
    return scratch / file.target
