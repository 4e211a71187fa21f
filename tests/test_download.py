"""download_dataset against a real HTTP server on 127.0.0.1 that supports Range and can misbehave on demand."""

from __future__ import annotations

import dataclasses
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from datasets import download
from datasets.base import DatasetError
from datasets.download import MANIFESTS, Manifest, download_dataset

TRAIN_ZIP = "ISIC-2017_Training_Data.zip"
TRAIN_CSV = "ISIC-2017_Training_Part3_GroundTruth.csv"
IMAGES = {"ISIC-2017_Training_Data": 4, "ISIC-2017_Validation_Data": 2, "ISIC-2017_Test_v2_Data": 3}


class RangeHandler(BaseHTTPRequestHandler):
    """Serves the server's folder, honouring ``Range: bytes=N-`` unless told not to, and can drop a transfer."""

    server: FileServer

    def do_GET(self) -> None:
        self.server.requests.append((self.path, self.headers.get("Range")))
        path = self.server.folder / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        wanted = self.headers.get("Range")
        if wanted and not self.server.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start -= self.server.misplace_range
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = self.server.cut_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            time.sleep(self.server.stall_seconds)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.folder = folder
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: dict[str, int] = {}  # URL path -> bytes sent before the connection drops (once)
        self.ignore_range = False
        self.misplace_range = 0  # answer Range with a 206 starting this many bytes too early
        self.stall_seconds = 0.0  # after a cut, hold the connection open this long before dropping it

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def paths(self) -> list[str]:
        return [path for path, _ in self.requests]


def write_zip(path: Path, folder: str, images: int) -> None:
    """An archive in the official shape: tiny jpgs plus the superpixels and metadata files that are not images."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/", "")
        for i in range(images):
            archive.writestr(f"{folder}/ISIC_{i:07d}.jpg", b"\xff\xd8\xff\xe0" + bytes([i]) * 300 + b"\xff\xd9")
            archive.writestr(f"{folder}/ISIC_{i:07d}_superpixels.png", b"\x89PNG" + bytes([i]) * 50)
        archive.writestr(f"{folder}/{folder}_metadata.csv", "image_id,age_approximate,sex\r\n")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[FileServer]:
    folder = tmp_path / "served" / "2017"
    folder.mkdir(parents=True)
    for name, count in IMAGES.items():
        write_zip(folder / f"{name}.zip", name, count)
        label_file = name.replace("_Data", "_Part3_GroundTruth.csv")
        rows = "".join(f"ISIC_{i:07d},0.0,1.0\r\n" for i in range(count))
        (folder / label_file).write_bytes(b"image_id,melanoma,seborrheic_keratosis\r\n" + rows.encode() * 20)
    srv = FileServer(tmp_path / "served")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join()


def shrink(manifest: Manifest, counts: dict[str, int]) -> Manifest:
    """An official manifest with the test's image counts, keyed by the folder an archive unpacks to."""
    files = tuple(dataclasses.replace(f, images=counts.get(f.target, f.images)) for f in manifest.files)
    return dataclasses.replace(manifest, files=files)


def small_manifest(**counts: int) -> Manifest:
    return shrink(MANIFESTS["isic2017"], {**IMAGES, **counts})


def fetch(server: FileServer, root: Path, manifest: Manifest | None = None):
    return download_dataset(
        "isic2017", root, base_url=server.base_url, progress=False, manifest=manifest or small_manifest()
    )


def served(server: FileServer, name: str) -> Path:
    return server.folder / "2017" / name


def assert_official_layout(server: FileServer, root: Path) -> None:
    for folder, count in IMAGES.items():
        with zipfile.ZipFile(served(server, f"{folder}.zip")) as archive:
            for member in archive.infolist():
                if not member.is_dir():
                    assert (root / member.filename).read_bytes() == archive.read(member)
        assert len(list((root / folder).glob("*.jpg"))) == count
        label_file = folder.replace("_Data", "_Part3_GroundTruth.csv")
        assert (root / label_file).read_bytes() == served(server, label_file).read_bytes()
    assert sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) == sorted(
        [*IMAGES, *(f.replace("_Data", "_Part3_GroundTruth.csv") for f in IMAGES)]
    )
    assert not [p for p in (root / ".downloads").iterdir() if not p.name.endswith(".done")]


def test_full_download_gives_official_layout(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    summary = fetch(server, root)
    assert_official_layout(server, root)
    assert sorted(summary.downloaded) == sorted(f.name for f in MANIFESTS["isic2017"].files)
    assert summary.resumed == [] and summary.skipped == []
    assert all(rng is None for _, rng in server.requests)
    assert "downloaded 6" in str(summary)


def test_isic2018_unpacks_images_and_label_archives(server: FileServer, tmp_path: Path) -> None:
    folder = server.folder / "2018"
    folder.mkdir()
    counts = {f"ISIC2018_Task3_{split}_Input": n for split, n in [("Training", 5), ("Validation", 1), ("Test", 2)]}
    for name, count in counts.items():
        write_zip(folder / f"{name}.zip", name, count)
    for split in ("Training", "Validation", "Test"):
        name = f"ISIC2018_Task3_{split}_GroundTruth"
        with zipfile.ZipFile(folder / f"{name}.zip", "w") as archive:
            archive.writestr(f"{name}/{name}.csv", "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC\n")
            archive.writestr(f"{name}/LICENSE.txt", "CC BY-NC 4.0\n")
    (folder / "ISIC2018_Task3_Training_LesionGroupings.csv").write_text("image,lesion_id,diagnosis_confirm_type\n")
    root = tmp_path / "data"
    manifest = shrink(MANIFESTS["isic2018"], counts)
    summary = download_dataset("isic2018", root, base_url=server.base_url, progress=False, manifest=manifest)
    assert len(summary.downloaded) == 7
    for name, count in counts.items():
        assert len(list((root / name).glob("*.jpg"))) == count
    assert (root / "ISIC2018_Task3_Test_GroundTruth" / "ISIC2018_Task3_Test_GroundTruth.csv").is_file()
    assert (root / "ISIC2018_Task3_Training_LesionGroupings.csv").is_file()


def test_rerun_skips_everything_without_a_request(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    fetch(server, root)
    server.requests.clear()
    summary = fetch(server, root)
    assert server.requests == []
    assert len(summary.skipped) == 6 and summary.downloaded == [] and summary.resumed == []


@pytest.mark.parametrize("name", [TRAIN_ZIP, TRAIN_CSV])
def test_interrupted_transfer_resumes_with_range(server: FileServer, tmp_path: Path, name: str) -> None:
    root = tmp_path / "data"
    server.cut_after[f"/2017/{name}"] = 700
    with pytest.raises(DatasetError, match=f"{name}.*stopped after 700 .*run again to resume"):
        fetch(server, root)
    assert (root / ".downloads" / f"{name}.part").stat().st_size == 700
    server.requests.clear()
    summary = fetch(server, root)
    assert (f"/2017/{name}", "bytes=700-") in server.requests
    assert name in summary.resumed
    assert_official_layout(server, root)  # byte-identical files, and every extracted member identical


def test_server_ignoring_range_restarts_the_file(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    server.cut_after[f"/2017/{TRAIN_CSV}"] = 100
    with pytest.raises(DatasetError):
        fetch(server, root)
    server.ignore_range = True
    summary = fetch(server, root)
    assert (f"/2017/{TRAIN_CSV}", "bytes=100-") in server.requests
    assert TRAIN_CSV in summary.downloaded
    assert (root / TRAIN_CSV).read_bytes() == served(server, TRAIN_CSV).read_bytes()


@pytest.mark.parametrize(("extra", "status"), [(b"", "resumed"), (b"not in the file", "downloaded")])
def test_part_file_at_or_past_the_end_gets_416(server: FileServer, tmp_path: Path, extra: bytes, status: str) -> None:
    """A complete part is kept; one longer than the file cannot be trusted and is fetched again."""
    root = tmp_path / "data"
    (root / ".downloads").mkdir(parents=True)
    full = served(server, TRAIN_CSV).read_bytes()
    (root / ".downloads" / f"{TRAIN_CSV}.part").write_bytes(full + extra)
    summary = fetch(server, root)
    assert (f"/2017/{TRAIN_CSV}", f"bytes={len(full + extra)}-") in server.requests
    assert TRAIN_CSV in getattr(summary, status)
    assert (root / TRAIN_CSV).read_bytes() == full


def test_stalled_transfer_times_out_and_resumes(
    server: FileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(download, "TIMEOUT_SECONDS", 0.2)
    root = tmp_path / "data"
    server.cut_after[f"/2017/{TRAIN_ZIP}"] = 700
    server.stall_seconds = 1.0
    with pytest.raises(DatasetError, match=r"stopped after 700 bytes \(timed out\); run again to resume"):
        fetch(server, root)
    summary = fetch(server, root)
    assert TRAIN_ZIP in summary.resumed
    assert_official_layout(server, root)


def test_resume_answered_with_the_wrong_range_starts_over(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    server.cut_after[f"/2017/{TRAIN_ZIP}"] = 700
    with pytest.raises(DatasetError):
        fetch(server, root)
    server.misplace_range = 10
    with pytest.raises(DatasetError, match="wrong range"):
        fetch(server, root)
    assert not (root / ".downloads" / f"{TRAIN_ZIP}.part").exists()
    server.misplace_range = 0
    assert TRAIN_ZIP in fetch(server, root).downloaded
    assert_official_layout(server, root)


def test_interrupted_extraction_is_redone_from_the_kept_archive(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    downloads = root / ".downloads"
    (downloads / "ISIC-2017_Training_Data.extracting" / "ISIC-2017_Training_Data").mkdir(parents=True)
    (downloads / "ISIC-2017_Training_Data.extracting" / "ISIC-2017_Training_Data" / "half.jpg").write_bytes(b"x")
    (downloads / TRAIN_ZIP).write_bytes(served(server, TRAIN_ZIP).read_bytes())
    summary = fetch(server, root)
    assert f"/2017/{TRAIN_ZIP}" not in server.paths()
    assert TRAIN_ZIP in summary.resumed
    assert not (root / "ISIC-2017_Training_Data" / "half.jpg").exists()
    assert_official_layout(server, root)


@pytest.mark.parametrize("damage", ["truncate", "flip-byte"])
def test_corrupt_archive_is_deleted_and_fetched_again(server: FileServer, tmp_path: Path, damage: str) -> None:
    root = tmp_path / "data"
    good = served(server, TRAIN_ZIP).read_bytes()
    if damage == "truncate":
        bad = good[: len(good) // 2]
    else:
        at = good.index(b"\xff\xd8\xff\xe0") + 10  # inside the first stored image, so only its CRC fails
        bad = good[:at] + bytes([good[at] ^ 0xFF]) + good[at + 1 :]
    served(server, TRAIN_ZIP).write_bytes(bad)
    with pytest.raises(DatasetError, match=re.escape(TRAIN_ZIP)) as caught:
        fetch(server, root)
    assert "deleted" in str(caught.value)
    if damage == "flip-byte":
        assert "ISIC_0000000.jpg" in str(caught.value)
    assert not (root / ".downloads" / TRAIN_ZIP).exists()
    assert not (root / "ISIC-2017_Training_Data").exists()
    served(server, TRAIN_ZIP).write_bytes(good)
    fetch(server, root)
    assert_official_layout(server, root)


def test_wrong_image_count_is_a_clear_error(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    manifest = small_manifest(**{"ISIC-2017_Training_Data": 5})
    with pytest.raises(DatasetError, match=rf"{re.escape(TRAIN_ZIP)} holds 4 \.jpg images .*expected 5"):
        fetch(server, root, manifest)
    assert not (root / "ISIC-2017_Training_Data").exists()


def test_missing_file_names_the_url(server: FileServer, tmp_path: Path) -> None:
    served(server, TRAIN_CSV).unlink()
    with pytest.raises(DatasetError, match=re.escape(f"{server.base_url}/2017/{TRAIN_CSV}") + ".*404"):
        fetch(server, tmp_path / "data")


def test_unreachable_server_names_the_url(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with pytest.raises(DatasetError, match=re.escape(f"cannot download {base}/2017/{TRAIN_ZIP}")):
        download_dataset("isic2017", tmp_path, base_url=base, progress=False, manifest=small_manifest())


def test_existing_folder_not_made_by_download_is_left_alone(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "ISIC-2017_Training_Data").mkdir(parents=True)
    with pytest.raises(DatasetError, match="ISIC-2017_Training_Data exists but was not made by this download"):
        fetch(server, root)
    assert server.requests == []


def test_aptos2019_explains_the_kaggle_step(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="Kaggle") as caught:
        download_dataset("aptos2019", tmp_path)
    assert "kaggle competitions download -c aptos2019-blindness-detection" in str(caught.value)
    assert "train.csv" in str(caught.value) and "train_images/" in str(caught.value)


def test_unknown_name_lists_valid_names(tmp_path: Path) -> None:
    expected = "unknown dataset 'isic2016' (did you mean 'isic2017' or 'isic2018'?); valid names: isic2017, isic2018, "
    with pytest.raises(DatasetError, match=re.escape(expected + "aptos2019")):
        download_dataset("isic2016", tmp_path)
    assert not tmp_path.joinpath(".downloads").exists()


def free_port() -> int:
    """A port nothing listens on: bound once to learn it, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def offline_error(base_url: str, root: Path) -> str:
    with pytest.raises(DatasetError) as caught:
        download_dataset("isic2017", root, base_url=base_url, progress=False, manifest=small_manifest())
    message = str(caught.value)
    assert "\n" not in message
    assert f"by hand into {root / '.downloads'}/ and run again" in message
    assert f"from {download.OFFICIAL_BASE_URL}/2017/" in message and "--base-url" in message
    return message


@pytest.mark.parametrize(
    ("base_url", "reason"),
    [
        ("http://nonexistent.invalid", "cannot resolve the host name nonexistent.invalid (DNS lookup failed"),
        (f"http://127.0.0.1:{free_port()}", "connection refused by 127.0.0.1:"),
    ],
    ids=["dns", "refused"],
)
def test_offline_says_what_failed_and_what_to_do_and_leaves_nothing(tmp_path: Path, base_url: str, reason: str) -> None:
    root = tmp_path / "new" / "isic2017"
    message = offline_error(base_url, root)
    assert message.startswith(f"cannot download {base_url}/2017/{TRAIN_ZIP}: {reason}")
    assert all(f.name in message for f in MANIFESTS["isic2017"].files)  # every file to fetch by hand
    assert list(tmp_path.iterdir()) == []  # neither root nor its parent was left behind


def test_http_error_status_names_it_and_keeps_an_existing_root(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "notes.txt").parent.mkdir()
    (root / "notes.txt").write_text("mine\n")
    served(server, TRAIN_ZIP).unlink()
    message = offline_error(server.base_url, root)
    assert "the server answered HTTP 404 Not Found" in message
    assert [p.name for p in root.iterdir()] == ["notes.txt"]  # .downloads/ removed, the user's file kept


def test_connection_dropped_before_any_byte_leaves_no_part_file(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    server.cut_after[f"/2017/{TRAIN_ZIP}"] = 0
    with pytest.raises(DatasetError, match="stopped after 0 of"):
        fetch(server, root)
    assert not root.exists()


def test_failure_after_finished_files_keeps_them(server: FileServer, tmp_path: Path) -> None:
    root = tmp_path / "data"
    served(server, TRAIN_CSV).unlink()
    with pytest.raises(DatasetError, match="HTTP 404"):
        fetch(server, root)
    assert (root / "ISIC-2017_Training_Data").is_dir() and (root / ".downloads" / f"{TRAIN_ZIP}.done").is_file()


def test_files_put_in_downloads_by_hand_install_without_network(server: FileServer, tmp_path: Path) -> None:
    """The remedy the offline message gives works: nothing is requested, the layout is complete."""
    root = tmp_path / "data"
    (root / ".downloads").mkdir(parents=True)
    for file in MANIFESTS["isic2017"].files:
        (root / ".downloads" / file.name).write_bytes(served(server, file.name).read_bytes())
    summary = download_dataset(
        "isic2017", root, base_url="http://nonexistent.invalid", progress=False, manifest=small_manifest()
    )
    assert len(summary.resumed) == 6
    assert_official_layout(server, root)
