"""APTOS 2019 reader: seeded stratified split of train.csv, grades checked, PNGs decoded."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from official_layouts import make_aptos2019, replace_in, request, truncate

from datasets import aptos2019
from datasets.base import DatasetError
from datasets.registry import load_dataset


@pytest.fixture
def root(tmp_path):
    return make_aptos2019(tmp_path / "aptos2019")


def test_loads_a_seeded_stratified_70_15_15_split(root, tmp_path):
    data = load_dataset("aptos2019", request(root, tmp_path / "cache", split_seed=1))
    assert data.task == "5grade" and data.num_classes == 5 and data.image_size == 32
    assert [split.class_counts(5) for split in data.splits().values()] == [[6] * 5, [1] * 5, [1] * 5]
    assert data.split_record["seed"] == 1 and data.split_record["source"] == "train.csv"
    assert sorted(sum(data.split_record["ids"].values(), [])) == sorted(f"{n:012x}" for n in range(40))


def test_split_depends_on_the_seed_only(root, tmp_path):
    first, again, other = (aptos2019.plan(request(root, tmp_path, split_seed=seed)) for seed in (0, 0, 5))
    assert first.splits == again.splits and first.splits["test"].ids != other.splits["test"].ids


@pytest.mark.parametrize("grade", ["5", "-1", "2.5", "x", ""])
def test_grade_out_of_range_names_file_line_and_id(root, tmp_path, grade):
    replace_in(root / "train.csv", "000000000002,2", f"000000000002,{grade}")
    report = aptos2019.check(request(root, tmp_path / "cache"))
    assert report.problems == [f"{root / 'train.csv'} line 4 (000000000002): diagnosis={grade!r} is not in 0-4"]
    with pytest.raises(DatasetError, match="is not in 0-4"):
        aptos2019.load(request(root, tmp_path / "cache"))


def test_wrong_columns_say_expected_and_found(root, tmp_path):
    replace_in(root / "train.csv", "id_code,diagnosis", "image,level")
    report = aptos2019.check(request(root, tmp_path / "cache"))
    assert f"{root / 'train.csv'}: wrong columns: expected id_code,diagnosis, found image,level" in report.problems
    assert "split 'train' is empty" in report.format()


def test_missing_and_truncated_pngs_are_named(root, tmp_path):
    (root / "train_images" / "000000000003.png").unlink()
    truncate(root / "train_images" / "000000000004.png")
    text = aptos2019.check(request(root, tmp_path / "cache")).format()
    assert "image files listed in train.csv (seeded split, seed 0) are missing" in text and "000000000003" in text
    assert f"unreadable or truncated image {root / 'train_images' / '000000000004.png'}" in text


def test_missing_image_folder_is_said(root, tmp_path):
    shutil.rmtree(root / "train_images")
    text = aptos2019.check(request(root, tmp_path / "cache")).format()
    assert f"{root / 'train_images'} (folder not found)" in text


@pytest.mark.realdata
def test_real_train_csv_grades_and_split(shared_data, tmp_path):
    labels = shared_data / "labels" / "aptos2019_train.csv"
    if not labels.is_file():
        pytest.skip(f"{labels} not found")
    (tmp_path / "aptos2019").mkdir()
    (tmp_path / "aptos2019" / "train.csv").symlink_to(labels)
    plan = aptos2019.plan(request(tmp_path / "aptos2019", tmp_path / "cache"))
    counts = {name: np.bincount(split.labels, minlength=5) for name, split in plan.splits.items()}
    total = sum(counts.values())
    assert plan.problems == [] and total.tolist() == [1805, 370, 999, 193, 295]
    for name, share in (("train", 0.70), ("val", 0.15), ("test", 0.15)):
        assert np.all(np.abs(counts[name] - share * total) <= 1), (name, counts[name])
