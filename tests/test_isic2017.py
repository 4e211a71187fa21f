"""ISIC 2017 reader: the official layout loads; every bad input is reported naming its file or row."""

from __future__ import annotations

import time

import numpy as np
import pytest
from official_layouts import ISIC2017_COUNTS, make_isic2017, replace_in, request, truncate, write_image

from datasets import isic2017
from datasets.base import DatasetError
from datasets.registry import load_dataset

TRAIN_CSV = "ISIC-2017_Training_Part3_GroundTruth.csv"


@pytest.fixture
def root(tmp_path):
    return make_isic2017(tmp_path / "isic2017")


def assert_problem(root, tmp_path, *fragments: str) -> str:
    """check() reports a problem containing every fragment, and load() raises the same text."""
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert any(all(fragment in problem for fragment in fragments) for problem in report.problems), report.format()
    with pytest.raises(DatasetError) as raised:
        isic2017.load(request(root, tmp_path / "cache"))
    assert str(raised.value) == report.format()
    return report.format()


def test_loads_official_splits_with_three_classes(root, tmp_path):
    data = load_dataset("isic2017", request(root, tmp_path / "cache"))
    assert data.task == "3class" and data.class_names == ("melanoma", "seborrheic_keratosis", "nevus")
    for name, split in data.splits().items():
        assert split.class_counts(3) == list(ISIC2017_COUNTS[name])
        assert split.images.shape == (len(split), 3, 32, 32) and split.images.dtype == np.uint8
        assert all(image_id.startswith("ISIC_") and "superpixels" not in image_id for image_id in split.ids)
    assert data.split_record["method"] == "official"
    assert data.split_record["ids"]["val"] == list(data.val.ids)


@pytest.mark.parametrize(
    ("task", "names", "train_counts"),
    [
        ("melanoma", ("other", "melanoma"), [5, 2]),
        ("sk", ("other", "seborrheic_keratosis"), [5, 2]),
    ],
)
def test_binary_tasks_relabel_the_same_rows(root, tmp_path, task, names, train_counts):
    data = isic2017.load(request(root, tmp_path / "cache", task=task))
    assert data.class_names == names and data.train.class_counts(2) == train_counts


def test_check_formats_a_table_of_counts(root, tmp_path):
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert report.ok and report.sizes == {"train": 7, "val": 3, "test": 4}
    text = report.format()
    assert "melanoma" in text and "no problems found" in text
    assert text.splitlines()[2].split() == ["train", "7", "2", "2", "3"]


def test_missing_images_are_counted_and_named(root, tmp_path):
    for number in (1, 2):
        (root / "ISIC-2017_Training_Data" / f"ISIC_{number:07d}.jpg").unlink()
    assert_problem(root, tmp_path, "2 of 7 image files", TRAIN_CSV, "ISIC_0000001, ISIC_0000002")


def test_truncated_and_unreadable_images_are_named(root, tmp_path):
    truncated = root / "ISIC-2017_Validation_Data" / "ISIC_0000007.jpg"
    truncate(truncated)
    garbage = root / "ISIC-2017_Test_v2_Data" / "ISIC_0000010.jpg"
    garbage.write_bytes(b"not a jpeg")
    text = assert_problem(root, tmp_path, "unreadable or truncated image", str(truncated))
    assert str(garbage) in text


def test_wrong_columns_say_expected_and_found(root, tmp_path):
    replace_in(root / TRAIN_CSV, "seborrheic_keratosis", "sk")
    assert_problem(
        root, tmp_path, TRAIN_CSV, "expected image_id,melanoma,seborrheic_keratosis", "found image_id,melanoma,sk"
    )


def test_row_with_two_classes_is_not_one_hot(root, tmp_path):
    replace_in(root / TRAIN_CSV, "ISIC_0000000,1.0,0.0", "ISIC_0000000,1.0,1.0")
    assert_problem(root, tmp_path, TRAIN_CSV, "line 2 (ISIC_0000000)", "not one-hot")


def test_non_numeric_label_is_reported(root, tmp_path):
    replace_in(root / TRAIN_CSV, "ISIC_0000000,1.0,0.0", "ISIC_0000000,yes,0.0")
    assert_problem(root, tmp_path, TRAIN_CSV, "line 2 (ISIC_0000000)", "not all numbers")


def test_duplicate_id_in_a_file_names_both_lines(root, tmp_path):
    replace_in(root / TRAIN_CSV, "ISIC_0000001,", "ISIC_0000000,")
    assert_problem(root, tmp_path, TRAIN_CSV, "line 3", "duplicate id ISIC_0000000 (first on line 2)")


def test_id_in_two_splits_is_a_leak(root, tmp_path):
    val_csv = root / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    replace_in(val_csv, "ISIC_0000007,", "ISIC_0000000,")
    write_image(root / "ISIC-2017_Validation_Data" / "ISIC_0000000.jpg", 0)
    assert_problem(root, tmp_path, "duplicate id(s) in both 'train' and 'val'", "ISIC_0000000")


def test_empty_split_is_reported(root, tmp_path):
    val_csv = root / "ISIC-2017_Validation_Part3_GroundTruth.csv"
    val_csv.write_bytes(b"image_id,melanoma,seborrheic_keratosis\r\n")
    assert_problem(root, tmp_path, "split 'val' is empty", val_csv.name)


def test_missing_ground_truth_file_is_named(root, tmp_path):
    (root / TRAIN_CSV).unlink()
    assert_problem(root, tmp_path, TRAIN_CSV, "file not found")


def test_every_problem_is_listed_at_once(root, tmp_path):
    replace_in(root / TRAIN_CSV, "ISIC_0000000,1.0,0.0", "ISIC_0000000,1.0,1.0")
    (root / "ISIC-2017_Test_v2_Data" / "ISIC_0000010.jpg").unlink()
    report = isic2017.check(request(root, tmp_path / "cache"))
    assert len(report.problems) == 2


@pytest.mark.realdata
def test_real_isic2017_counts_and_decoding(shared_data, tmp_path):
    root = shared_data / "isic2017"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    started = time.perf_counter()
    data = isic2017.load(request(root, tmp_path / "cache"))
    elapsed = time.perf_counter() - started
    assert [len(split) for split in data.splits().values()] == [2000, 150, 600]
    assert data.train.class_counts(3) == [374, 254, 1372]
    assert data.val.class_counts(3) == [30, 42, 78]
    assert data.test.class_counts(3) == [117, 90, 393]
    assert data.train.images.shape == (2000, 3, 32, 32) and data.train.images[:8].std() > 0
    assert elapsed < 30, f"decoding 2750 images at 32 px took {elapsed:.1f} s"
