"""The decoded cache: one decode rule, reused while files are unchanged, rebuilt when they change."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from official_layouts import make_isic2017, request, write_image
from PIL import Image

from datasets import cache, isic2017
from datasets.cache import DecodeFailures, cache_path, cache_root, cached_images
from datasets.decode import POOL_THRESHOLD, decode, decode_all


@pytest.fixture
def images(tmp_path) -> list[Path]:
    return [write_image(tmp_path / "images" / f"{n}.jpg", n) for n in range(5)]


def forbid_decoding(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")

    monkeypatch.setattr(cache, "decode_all", fail)


def test_decode_resizes_the_shorter_side_and_crops_the_centre(tmp_path):
    pixels = np.zeros((30, 60, 3), dtype=np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left third red, middle green, right third blue
    pixels[:, 20:40] = (0, 255, 0)
    pixels[:, 40:] = (0, 0, 255)
    path = tmp_path / "wide.png"
    Image.fromarray(pixels).save(path)
    array, source_size = decode(path, 16)
    assert array.shape == (3, 16, 16) and array.dtype == np.uint8 and source_size == (60, 30)
    # 60x30 -> 32x16, crop columns 8..24: red only in the first few columns, blue only in the last few.
    assert array[0, :, 0].min() > 200 and array[2, :, -1].min() > 200 and array[1, :, 8].min() > 200


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root(tmp_path / "given") == tmp_path / "given"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("BENCH_CACHE_DIR")
    assert cache_root() == tmp_path / "xdg" / "fgssl-bench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "fgssl-bench"


def test_second_open_reuses_the_cache_read_only(images, tmp_path, monkeypatch):
    first = cached_images("demo", "train", images, 32, tmp_path / "cache")
    path = cache_path("demo", "train", images, 32, tmp_path / "cache")
    stamp = path.stat().st_mtime_ns
    forbid_decoding(monkeypatch)
    second = cached_images("demo", "train", images, 32, tmp_path / "cache")
    assert np.array_equal(first, second) and path.stat().st_mtime_ns == stamp
    assert isinstance(second, np.memmap) and not second.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        second[0, 0, 0, 0] = 1
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial files left behind


def test_loader_reuses_cache_until_an_image_changes(tmp_path, monkeypatch):
    root = make_isic2017(tmp_path / "isic2017")
    before = isic2017.load(request(root, tmp_path / "cache"))
    with monkeypatch.context() as patched:
        forbid_decoding(patched)
        assert np.array_equal(isic2017.load(request(root, tmp_path / "cache")).train.images, before.train.images)
    changed = write_image(root / "ISIC-2017_Training_Data" / "ISIC_0000000.jpg", 99)
    os.utime(changed, ns=(1, 1))  # a new mtime even on coarse-clock file systems
    after = isic2017.load(request(root, tmp_path / "cache"))
    assert not np.array_equal(after.train.images[0], before.train.images[0])
    assert np.array_equal(after.train.images[1:], before.train.images[1:])
    assert np.array_equal(after.val.images, before.val.images)
    assert len(list((tmp_path / "cache").glob("isic2017-train-32px-*.npy"))) == 2


def test_key_depends_on_split_size_and_file_set(images, tmp_path):
    keys = {
        cache_path("demo", "train", images, 32, tmp_path),
        cache_path("demo", "val", images, 32, tmp_path),
        cache_path("demo", "train", images, 64, tmp_path),
        cache_path("demo", "train", images[:-1], 32, tmp_path),
    }
    assert len(keys) == 4


def test_undecodable_image_writes_no_cache(images, tmp_path):
    images[2].write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DecodeFailures) as raised:
        cached_images("demo", "train", images, 32, tmp_path / "cache")
    assert len(raised.value.failures) == 1 and raised.value.failures[0].startswith(f"{images[2]}: ")
    assert list((tmp_path / "cache").iterdir()) == []


def test_corrupt_cache_file_is_rebuilt(images, tmp_path):
    path = cache_path("demo", "train", images, 32, tmp_path / "cache")
    expected = np.array(cached_images("demo", "train", images, 32, tmp_path / "cache"))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.warns(UserWarning, match=f"decoded cache {path} failed its integrity check"):
        assert np.array_equal(cached_images("demo", "train", images, 32, tmp_path / "cache"), expected)


def test_process_pool_decodes_the_same_bytes(tmp_path):
    paths = [write_image(tmp_path / f"{n}.jpg", n, (24, 20)) for n in range(POOL_THRESHOLD)]
    serial, pooled = (np.zeros((len(paths), 3, 16, 16), dtype=np.uint8) for _ in range(2))
    sizes = np.zeros((len(paths), 2), dtype=np.int64)
    assert decode_all(paths, 16, serial, workers=1) == []
    assert decode_all(paths, 16, pooled, sizes=sizes, workers=2) == []
    assert np.array_equal(serial, pooled) and serial.std() > 0
    assert (sizes == (24, 20)).all()
