"""Faults in files on disk (issue 21): a damaged decoded cache, an unknown label column, degenerate
images and 16-bit PNGs. Each test breaks a real file and checks what ``check`` and ``load`` say."""

from __future__ import annotations

import csv
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from official_layouts import make_aptos2019, make_isic2017, make_isic2018, request, write_csv, write_image
from PIL import Image

from bench.cli import main
from datasets import aptos2019, isic2017, isic2018
from datasets.base import Dataset, DatasetError
from datasets.cache import cache_path

ISIC2017_TRAIN_CSV = "ISIC-2017_Training_Part3_GroundTruth.csv"
ISIC2018_TRAIN_CSV = "ISIC2018_Task3_Training_GroundTruth.csv"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_isic2017(tmp_path / "isic2017")


def load_warnings(load: Callable[[], Dataset]) -> tuple[Dataset, list[str]]:
    """The dataset and the text of every warning ``load`` emitted."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load()
    return data, [str(warning.message) for warning in caught]


def split_cache(root: Path, cache_dir: Path, split: str, size: int = 32) -> Path:
    paths = isic2017.plan(request(root, cache_dir, image_size=size)).splits[split].paths
    return cache_path("isic2017", split, paths, size, cache_dir)


def zero_length(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def zeroed_pixels(path: Path) -> None:
    """Every pixel 0 behind an intact header (and record)."""
    images = np.load(path, mmap_mode="r+")
    images[:] = 0
    images.flush()


def missing_record(path: Path) -> None:
    """The right pixels as a plain ``.npy``, without any integrity record."""
    np.save(path, np.load(path))


def grown(path: Path) -> None:
    """Bytes inserted right after the pixels: the header still describes the array it had."""
    images = np.load(path, mmap_mode="r")
    end = images.offset + images.nbytes
    del images
    data = path.read_bytes()
    path.write_bytes(data[:end] + bytes(3072) + data[end:])


FAULTS = [
    pytest.param(zero_length, "zero-length file", id="zero-length"),
    pytest.param(truncated, "does not end with its integrity record", id="truncated"),
    pytest.param(zeroed_pixels, "pixel checksum does not match its record", id="zeroed-pixels"),
    pytest.param(missing_record, "does not end with its integrity record", id="missing-record"),
    pytest.param(grown, "bytes, expected", id="wrong-size"),
]


@pytest.mark.parametrize(("inject", "reason"), FAULTS)
def test_faulty_cache_is_rebuilt_on_load_with_one_warning_line(root, tmp_path, inject, reason):
    # A copy: the loaded arrays map the file, which the fault then cuts or zeroes in place.
    before = np.array(isic2017.load(request(root, tmp_path / "cache")).train.images)
    path = split_cache(root, tmp_path / "cache", "train")
    inject(path)
    data, messages = load_warnings(lambda: isic2017.load(request(root, tmp_path / "cache")))
    assert len(messages) == 1 and "\n" not in messages[0], messages
    assert f"decoded cache {path} failed its integrity check" in messages[0] and reason in messages[0]
    assert np.array_equal(data.train.images, before)
    assert load_warnings(lambda: isic2017.load(request(root, tmp_path / "cache")))[1] == []


@pytest.mark.parametrize(("inject", "reason"), FAULTS)
def test_data_check_reports_a_faulty_cache_and_rebuilds_it(root, tmp_path, inject, reason):
    isic2017.load(request(root, tmp_path / "cache"))
    path = split_cache(root, tmp_path / "cache", "val")
    inject(path)
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert report.ok and len(report.warnings) == 1, report.format()
    assert str(path) in report.warnings[0] and reason in report.warnings[0]
    assert "1 warning(s):" in report.format()
    assert isic2017.check(request(root, tmp_path / "cache")).warnings == []


def test_bench_data_prepare_rebuilds_a_zero_length_cache(root, tmp_path, capsys):
    args = ["--root", str(root), "--size", "32", "--cache-dir", str(tmp_path / "cache")]
    assert main(["data", "prepare", "isic2017", *args]) == 0
    path = split_cache(root, tmp_path / "cache", "test")
    path.write_bytes(b"")
    with pytest.warns(UserWarning, match=f"{path} failed its integrity check \\(zero-length file\\)"):
        assert main(["data", "prepare", "isic2017", *args]) == 0
    assert "decoded at 32 px: train 7, val 3, test 4" in capsys.readouterr().out
    path.write_bytes(b"")
    assert main(["data", "check", "isic2017", *args]) == 0
    assert f"{path} failed its integrity check (zero-length file)" in capsys.readouterr().out


def test_cache_file_is_an_npy_with_its_record_after_the_pixels(root, tmp_path):
    data = isic2017.load(request(root, tmp_path / "cache"))
    path = split_cache(root, tmp_path / "cache", "train")
    assert np.array_equal(np.load(path), data.train.images)  # still an ordinary .npy for NumPy
    assert path.read_bytes().endswith(b"FGSSLREC")
    assert sorted(p.suffix for p in path.parent.iterdir()) == [".npy"] * 3  # no partial files left


@pytest.mark.realdata
def test_real_isic2017_cache_with_zeroed_pixels_is_caught(shared_data, tmp_path):
    root = shared_data / "isic2017"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    before = np.array(isic2017.load(request(root, tmp_path / "cache")).val.images)
    path = split_cache(root, tmp_path / "cache", "val")
    zeroed_pixels(path)
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert report.ok and len(report.warnings) == 1 and "pixel checksum does not match" in report.warnings[0]
    zeroed_pixels(path)
    data, messages = load_warnings(lambda: isic2017.load(request(root, tmp_path / "cache")))
    assert len(messages) == 1 and str(path) in messages[0]
    assert np.array_equal(data.val.images, before) and before.std() > 0


def add_column(path: Path, name: str, set_for: dict[str, dict[str, str]]) -> None:
    """Append a column (``0.0`` by default) to a label CSV; ``set_for`` overrides fields per id."""
    raw = path.read_bytes()
    with path.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    fields = [dict(zip(header, row, strict=True)) | {name: "0.0"} for row in rows]
    fields = [row | set_for.get(row[header[0]], {}) for row in fields]
    newline = "\r\n" if b"\r\n" in raw else "\n"
    write_csv(path, [*header, name], [[row[column] for column in [*header, name]] for row in fields], newline)


def test_isic2018_extra_one_hot_column_is_refused(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", official_eval=True)
    csv_path = root / ISIC2018_TRAIN_CSV
    zeros = {column: "0.0" for column in ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")}
    add_column(csv_path, "XYZ", {"ISIC_0000000": zeros | {"XYZ": "1.0"}})
    expected = (
        f"{csv_path}: unknown label column(s) XYZ; expected only the label columns MEL,NV,BCC,AKIEC,BKL,DF,VASC "
        "besides the id"
    )
    report = isic2018.check(request(root, tmp_path / "cache"))
    assert expected in report.problems and not any("not one-hot" in problem for problem in report.problems)
    with pytest.raises(DatasetError, match="unknown label column"):
        isic2018.load(request(root, tmp_path / "cache"))


def test_isic2017_extra_column_does_not_turn_its_rows_into_nevus(root, tmp_path):
    csv_path = root / ISIC2017_TRAIN_CSV
    add_column(csv_path, "XYZ", {"ISIC_0000000": {"melanoma": "0.0", "XYZ": "1.0"}})
    with pytest.raises(DatasetError) as raised:
        isic2017.load(request(root, tmp_path / "cache"))
    assert f"{csv_path}: unknown label column(s) XYZ; expected only the label columns melanoma," in str(raised.value)


@pytest.mark.realdata
def test_real_isic2018_ground_truth_with_an_extra_column_is_refused(shared_data, tmp_path):
    real = shared_data / "labels" / "ISIC2018_Task3_Test_GroundTruth.csv"
    if not real.is_file():
        pytest.skip(f"{real} not found")
    root = tmp_path / "isic2018"
    (root / "ISIC2018_Task3_Training_Input").mkdir(parents=True)  # enough of a layout to be recognised
    for part in ("Training", "Validation", "Test"):
        shutil.copy(real, root / f"ISIC2018_Task3_{part}_GroundTruth.csv")
    add_column(root / "ISIC2018_Task3_Test_GroundTruth.csv", "XYZ", {})
    problems = isic2018.plan(request(root, tmp_path / "cache")).problems
    assert [problem for problem in problems if "ISIC2018_Task3_Validation" in problem] == []
    assert any("ISIC2018_Task3_Test_GroundTruth.csv: unknown label column(s) XYZ" in p for p in problems), problems


def test_degenerate_images_are_warned_about_in_check_and_on_every_load(root, tmp_path):
    folder = root / "ISIC-2017_Training_Data"
    for number, size in enumerate([(1, 1), (4000, 1), (100, 20), (64, 16)]):
        write_image(folder / f"ISIC_{number:07d}.jpg", number, size)
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert report.ok and report.warnings == [
        f"split 'train': 2 image(s) in {folder} with a side below 16 px (almost nothing to resize): "
        "ISIC_0000000.jpg (1x1), ISIC_0000001.jpg (4000x1)",
        f"split 'train': 2 image(s) in {folder} with an aspect ratio above 4:1 (the centre crop drops most): "
        "ISIC_0000001.jpg (4000x1), ISIC_0000002.jpg (100x20)",
    ]
    assert "2 warning(s):" in report.format()
    cache = split_cache(root, tmp_path / "cache", "train")
    stamp = cache.stat().st_mtime_ns
    for _ in range(2):  # the second load reads the sizes from the cache's record, not the images
        _, messages = load_warnings(lambda: isic2017.load(request(root, tmp_path / "cache")))
        assert messages == [f"isic2017: {warning}" for warning in report.warnings]
    assert cache.stat().st_mtime_ns == stamp


def write_png16(path: Path, pixels: np.ndarray) -> Path:
    """A 16-bit greyscale PNG (checked: bit depth 16 in the IHDR chunk)."""
    Image.fromarray(pixels.astype(np.uint16)).save(path)
    assert path.read_bytes()[24] == 16
    return path


def decoded(data: Dataset, image_id: str) -> np.ndarray:
    split = next(split for split in data.splits().values() if image_id in split.ids)
    return np.asarray(split.images[split.ids.index(image_id)])


def test_16_bit_pngs_keep_their_high_byte_instead_of_saturating(tmp_path):
    root = make_aptos2019(tmp_path / "aptos2019")
    folder = root / "train_images"
    levels = {0: 0, 4095: 15, 32896: 128, 65535: 255}
    for number, level in enumerate(levels):
        write_png16(folder / f"{number:012x}.png", np.full((30, 40), level))
    noise = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    Image.fromarray(noise).save(folder / f"{4:012x}.png")  # the same picture in 8 and in 16 bit
    write_png16(folder / f"{5:012x}.png", noise.astype(np.uint16) * 257)
    data = aptos2019.load(request(root, tmp_path / "cache"))
    for number, expected in enumerate(levels.values()):
        assert (decoded(data, f"{number:012x}") == expected).all(), (number, expected)
    eight, sixteen = decoded(data, f"{4:012x}"), decoded(data, f"{5:012x}")
    assert np.array_equal(eight, sixteen) and sixteen.std() > 0
