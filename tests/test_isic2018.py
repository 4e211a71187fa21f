"""ISIC 2018 Task 3 reader: official or carved splits, lesion-grouped carving, clear problems."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from official_layouts import make_isic2018, replace_in, request, write_csv

from datasets import isic2018
from datasets.base import DatasetError

TRAIN_CSV = "ISIC2018_Task3_Training_GroundTruth.csv"
CARVED = "carved val, test out of training"


def lesion_of(root: Path) -> dict[str, str]:
    lines = (root / "HAM10000_metadata.csv").read_text().splitlines()[1:]
    return {line.split(",")[1]: line.split(",")[0] for line in lines}


def assert_one_side_per_lesion(split_ids: dict[str, list[str]], lesions: dict[str, str]) -> None:
    side_of: dict[str, str] = {}
    for split, ids in split_ids.items():
        for image_id in ids:
            assert side_of.setdefault(lesions[image_id], split) == split, f"lesion {lesions[image_id]} leaks"


def test_official_validation_and_test_are_used_without_warning(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", official_eval=True, nested_ground_truth=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = isic2018.load(request(root, tmp_path / "cache"))
    assert data.class_names == ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC") and data.task == "7class"
    assert [len(split) for split in data.splits().values()] == [42, 7, 7]
    assert data.val.class_counts(7) == [1] * 7 and data.split_record["method"] == "official"


def test_carved_split_is_stratified_grouped_seeded_and_recorded(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", per_class=20)
    with pytest.warns(UserWarning, match=f"{CARVED}.*seed 3.*grouped by lesion_id from HAM10000_metadata.csv"):
        data = isic2018.load(request(root, tmp_path / "cache", split_seed=3))
    record = data.split_record
    assert record["seed"] == 3 and record["grouped_by"] == "HAM10000_metadata.csv"
    assert record["ids"] == {name: list(split.ids) for name, split in data.splits().items()}
    assert sorted(sum(record["ids"].values(), [])) == [f"ISIC_{n:07d}" for n in range(140)]
    assert_one_side_per_lesion(record["ids"], lesion_of(root))
    # Ten two-image lesions per class: 15% is 1.5 lesions, so each class gets one or two lesions.
    assert all(count in (2, 4) for count in data.val.class_counts(7) + data.test.class_counts(7))
    with pytest.warns(UserWarning):
        again = isic2018.plan(request(root, tmp_path / "cache", split_seed=3))
        other = isic2018.plan(request(root, tmp_path / "cache", split_seed=4))
    assert again.splits["val"].ids == data.val.ids and other.splits["val"].ids != data.val.ids


def test_lesion_groupings_file_also_groups(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", grouping="groupings")
    with pytest.warns(UserWarning, match="ISIC2018_Task3_Training_LesionGroupings.csv"):
        plan = isic2018.plan(request(root, tmp_path / "cache"))
    assert plan.split_record["grouped_by"] == "ISIC2018_Task3_Training_LesionGroupings.csv" and not plan.problems


def test_without_grouping_file_the_warning_says_so(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", grouping=None)
    with pytest.warns(UserWarning, match="NOT grouped by lesion"):
        plan = isic2018.plan(request(root, tmp_path / "cache"))
    assert plan.split_record["grouped_by"] is None


def test_image_without_lesion_id_is_a_problem(tmp_path):
    root = make_isic2018(tmp_path / "isic2018")
    replace_in(root / "HAM10000_metadata.csv", "HAM_0000000,ISIC_0000000,", "HAM_0000000,ISIC_9999999,")
    with pytest.warns(UserWarning):
        report = isic2018.check(request(root, tmp_path / "cache"))
    expected = "HAM10000_metadata.csv: no lesion_id for 1 training image(s): ISIC_0000000"
    assert any(expected in problem for problem in report.problems)


def test_grouping_file_with_wrong_columns_is_named(tmp_path):
    root = make_isic2018(tmp_path / "isic2018")
    replace_in(root / "HAM10000_metadata.csv", "lesion_id", "lesion")
    with pytest.warns(UserWarning):
        report = isic2018.check(request(root, tmp_path / "cache"))
    assert any("HAM10000_metadata.csv: wrong columns: expected image_id,lesion_id" in p for p in report.problems)


@pytest.mark.parametrize(
    "row",
    [
        "ISIC_0000000,1.0,1.0,0.0,0.0,0.0,0.0,0.0",
        "ISIC_0000000,0.0,0.0,0.0,0.0,0.0,0.0,0.0",
        "ISIC_0000000,0.5,0.5,0.0,0.0,0.0,0.0,0.0",
    ],
)
def test_label_row_not_one_hot_names_file_and_line(tmp_path, row):
    root = make_isic2018(tmp_path / "isic2018", official_eval=True)
    replace_in(root / TRAIN_CSV, "ISIC_0000000,1.0,0.0,0.0,0.0,0.0,0.0,0.0", row)
    report = isic2018.check(request(root, tmp_path / "cache"))
    shown = ", ".join(f"{c}={v}" for c, v in zip(isic2018.CLASS_NAMES, row.split(",")[1:], strict=True))
    assert report.problems == [f"{root / TRAIN_CSV} line 2 (ISIC_0000000): label row is not one-hot ({shown})"]
    with pytest.raises(DatasetError, match="not one-hot"):
        isic2018.load(request(root, tmp_path / "cache"))


def test_official_test_folder_without_ground_truth_is_reported(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", official_eval=True)
    (root / "ISIC2018_Task3_Test_GroundTruth.csv").unlink()
    report = isic2018.check(request(root, tmp_path / "cache"))
    assert any("ISIC2018_Task3_Test_GroundTruth.csv: file not found" in p for p in report.problems)
    assert any("split 'test' is empty" in p for p in report.problems)


def real_labels_root(shared_data: Path, tmp_path: Path) -> Path:
    """The real label files linked (not copied) into the official layout, without images."""
    labels = shared_data / "labels"
    if not (labels / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"ISIC 2018 labels not found in {labels}")
    root = tmp_path / "isic2018"
    root.mkdir()
    (root / TRAIN_CSV).symlink_to(labels / "ISIC2018_Task3_Training_GroundTruth.derived.csv")
    (root / "HAM10000_metadata.csv").symlink_to(labels / "HAM10000_metadata.csv")
    return root


@pytest.mark.realdata
def test_real_training_labels_and_lesion_grouped_split(shared_data, tmp_path):
    root = real_labels_root(shared_data, tmp_path)
    with pytest.warns(UserWarning, match="grouped by lesion_id"):
        plan = isic2018.plan(request(root, tmp_path / "cache"))
    assert plan.problems == []
    labels = np.concatenate([split.labels for split in plan.splits.values()])
    assert len(labels) == 10015
    assert np.bincount(labels).tolist() == [1113, 6705, 514, 327, 1099, 115, 142]
    assert_one_side_per_lesion({name: split.ids for name, split in plan.splits.items()}, lesion_of(root))
    for split in ("val", "test"):
        share = np.bincount(plan.splits[split].labels, minlength=7) / np.bincount(labels)
        assert np.all(np.abs(share - 0.15) < 0.04), share


@pytest.mark.realdata
def test_real_official_test_csv_parses(shared_data, tmp_path):
    root = real_labels_root(shared_data, tmp_path)
    test_csv = "ISIC2018_Task3_Test_GroundTruth.csv"
    (root / test_csv).symlink_to(shared_data / "labels" / test_csv)
    with pytest.warns(UserWarning, match="no official val set"):
        plan = isic2018.plan(request(root, tmp_path / "cache"))
    assert plan.problems == [] and len(plan.splits["test"].ids) == 1512
    assert plan.split_record["carved"] == ["val"]


def test_ground_truth_with_wrong_columns_says_expected_and_found(tmp_path):
    path = write_csv(tmp_path / "isic2018" / TRAIN_CSV, ("image", "MEL"), [("ISIC_0000000", "1.0")])
    with pytest.warns(UserWarning):
        report = isic2018.check(request(path.parent, tmp_path / "cache"))
    assert f"{path}: wrong columns: expected image,MEL,NV,BCC,AKIEC,BKL,DF,VASC, found image,MEL" in report.problems
