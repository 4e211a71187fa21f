"""Issue 22, a newcomer's first hour: stratified subsets for quick runs in every reader, data errors that
name the remedy (a parent folder is recognised), and a "did you mean" for dataset names."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from official_layouts import make_aptos2019, make_isic2017, make_isic2018, request, write_image

from datasets import DataRequest, DatasetError, check_dataset, get_dataset_spec, load_dataset
from datasets import decode as decode_module
from datasets.decode import POOL_THRESHOLD, decode_all

DOWNLOAD_HINT = "to download it: bench data download isic2017 --root"
LAYOUT = (
    "ISIC-2017_{Training,Validation,Test_v2}_Data/ and ISIC-2017_{Training,Validation,Test_v2}_Part3_GroundTruth.csv"
)


def error_of(name: str, data_request: DataRequest) -> str:
    """The one-line message ``load_dataset`` and ``check_dataset`` both raise."""
    messages = []
    for call in (load_dataset, check_dataset):
        with pytest.raises(DatasetError) as caught:
            call(name, data_request)
        messages.append(str(caught.value))
    assert messages[0] == messages[1] and "\n" not in messages[0]
    return messages[0]


# --- subsets ------------------------------------------------------------------------------------


def test_isic2017_subset_is_stratified_recorded_and_only_it_is_decoded(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    full = load_dataset("isic2017", request(root, tmp_path / "full-cache"))
    cache = tmp_path / "cache"
    data = load_dataset("isic2017", request(root, cache, train_limit=3, eval_limit=2))
    assert [len(split) for split in data.splits().values()] == [3, 2, 2]
    assert data.train.class_counts(3) == [1, 1, 1]  # every class kept
    for name, split in data.splits().items():
        whole = full.splits()[name]
        position = [whole.ids.index(image_id) for image_id in split.ids]
        assert np.array_equal(split.images, whole.images[position])  # a subset of the full split, same bytes
        assert np.array_equal(split.labels, whole.labels[position])
    assert data.split_record["ids"] == {name: list(split.ids) for name, split in data.splits().items()}
    assert data.split_record["subset"] == {
        "method": "seeded stratified subset",
        "seed": 0,
        "train_limit": 3,
        "eval_limit": 2,
        "sizes": {"train": {"used": 3, "of": 7}, "val": {"used": 2, "of": 3}, "test": {"used": 2, "of": 4}},
    }
    assert sorted(len(np.load(path, mmap_mode="r")) for path in cache.glob("*.npy")) == [2, 2, 3]


def test_subset_is_repeatable_and_follows_the_split_seed(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", per_class=10, official_eval=True)
    ids = [
        load_dataset("isic2018", request(root, tmp_path / "cache", train_limit=14, split_seed=seed)).train.ids
        for seed in (0, 0, 1)
    ]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_eval_limit_alone_leaves_training_whole(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    data = load_dataset("isic2017", request(root, tmp_path / "cache", eval_limit=2))
    assert [len(split) for split in data.splits().values()] == [7, 2, 2]


def test_check_shows_the_subset_beside_the_name(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    report = check_dataset("isic2017", request(root, tmp_path / "cache", train_limit=3, eval_limit=2))
    assert report.ok and report.sizes == {"train": 3, "val": 2, "test": 2}
    first_line = report.format().splitlines()[0]
    subset = "seeded stratified subset (seed 0): train 3 of 7, val 2 of 3, test 2 of 4"
    assert first_line == f"isic2017 (task 3class; {subset})"


def test_missing_file_outside_the_subset_is_still_reported(tmp_path):
    """Label, leak and file-presence checks cover the whole split: a quick run does not hide broken data."""
    root = make_isic2017(tmp_path / "isic2017")
    data = load_dataset("isic2017", request(root, tmp_path / "cache", train_limit=3))
    unused = next(f"ISIC_{n:07d}" for n in range(7) if f"ISIC_{n:07d}" not in data.train.ids)
    (root / "ISIC-2017_Training_Data" / f"{unused}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"1 of 7 image files .* missing .*{unused}"):
        load_dataset("isic2017", request(root, tmp_path / "cache", train_limit=3))


@pytest.mark.filterwarnings("ignore:isic2018. no official")
def test_isic2018_carved_splits_are_limited_after_carving(tmp_path):
    root = make_isic2018(tmp_path / "isic2018", per_class=10)
    full = load_dataset("isic2018", request(root, tmp_path / "cache"))
    data = load_dataset("isic2018", request(root, tmp_path / "cache", train_limit=20, eval_limit=7))
    assert [len(split) for split in data.splits().values()] == [20, 7, 7]
    assert all(c == 1 for c in data.val.class_counts(7))  # 7 classes, 7 images: one each
    for name, split in data.splits().items():
        assert set(split.ids) <= set(full.splits()[name].ids)
    assert data.split_record["method"] == "seeded stratified split of training" and "subset" in data.split_record


def test_aptos2019_honours_the_limits(tmp_path):
    root = make_aptos2019(tmp_path / "aptos", per_grade=8)
    full = load_dataset("aptos2019", request(root, tmp_path / "cache"))
    data = load_dataset("aptos2019", request(root, tmp_path / "cache", train_limit=10, eval_limit=5))
    assert [len(split) for split in data.splits().values()] == [10, 5, 5]
    assert data.train.class_counts(5) == [2, 2, 2, 2, 2]
    assert data.split_record["subset"]["sizes"]["train"] == {"used": 10, "of": len(full.train)}
    assert set(data.test.ids) <= set(full.test.ids)


def test_synthetic_takes_the_same_subset_of_its_generated_splits():
    full = load_dataset("synthetic", DataRequest(image_size=16, synthetic_sizes=(40, 20, 20)))
    data = load_dataset(
        "synthetic", DataRequest(image_size=16, synthetic_sizes=(40, 20, 20), train_limit=8, eval_limit=4)
    )
    assert [len(split) for split in data.splits().values()] == [8, 4, 4]
    assert data.train.class_counts(4) == [2, 2, 2, 2]
    position = [full.train.ids.index(image_id) for image_id in data.train.ids]
    assert np.array_equal(data.train.images, full.train.images[position])
    assert np.array_equal(data.train.factors["lesion_area"], full.train.factors["lesion_area"][position])
    assert data.split_record["subset"]["sizes"]["val"] == {"used": 4, "of": 20}
    report = check_dataset("synthetic", DataRequest(image_size=16, synthetic_sizes=(40, 20, 20), train_limit=8))
    assert report.sizes == {"train": 8, "val": 20, "test": 20} and "train 8 of 40" in report.format()


@pytest.mark.parametrize("limits", [{"train_limit": 0}, {"eval_limit": -5}, {"train_limit": 2.5}, {"eval_limit": True}])
def test_a_limit_must_be_a_positive_whole_number(limits):
    name, value = next(iter(limits.items()))
    with pytest.raises(DatasetError, match=f"{name} must be a whole number of images >= 1 .*got {value!r}"):
        DataRequest(image_size=32, **limits)


@pytest.mark.realdata
def test_real_isic2017_subset(shared_data, tmp_path):
    root = shared_data / "isic2017"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    data = load_dataset("isic2017", request(root, tmp_path / "cache", train_limit=256, eval_limit=128))
    assert data.train.class_counts(3) == [48, 32, 176]  # 374/254/1372 of 2000, scaled to 256
    assert data.val.class_counts(3) == [26, 36, 66] and data.test.class_counts(3) == [25, 19, 84]
    assert data.train.images.shape == (256, 3, 32, 32) and data.train.images.std() > 0


# --- data errors that name the remedy -----------------------------------------------------------


def test_no_root_says_which_flag_what_layout_and_how_to_get_it():
    message = error_of("isic2017", DataRequest(image_size=32))
    assert message.startswith("dataset 'isic2017' needs a data root")
    assert LAYOUT in message and "--data-root DIR" in message and f"{DOWNLOAD_HINT} DIR" in message


def test_root_that_does_not_exist(tmp_path):
    message = error_of("isic2017", request(tmp_path / "nowhere", tmp_path / "cache"))
    assert f"data root {tmp_path / 'nowhere'} is not a directory (it does not exist)" in message
    assert LAYOUT in message and f"{DOWNLOAD_HINT} {tmp_path / 'nowhere'}" in message


def test_root_without_the_dataset(tmp_path):
    (tmp_path / "empty" / "unrelated").mkdir(parents=True)
    message = error_of("isic2017", request(tmp_path / "empty", tmp_path / "cache"))
    empty = tmp_path / "empty"
    assert message == f"no ISIC 2017 in {empty}: expected {LAYOUT} directly inside it; {DOWNLOAD_HINT} {empty}"


def test_parent_folder_is_recognised_and_refused_naming_the_subfolder(tmp_path):
    inner = make_isic2017(tmp_path / "data" / "isic2017")
    (tmp_path / "data" / "labels").mkdir()
    message = error_of("isic2017", request(tmp_path / "data", tmp_path / "cache"))
    assert message == (
        f"found ISIC 2017 in {inner}, not directly in {tmp_path / 'data'}: "
        f"pass --data-root {inner} (--root {inner} for bench data)"
    )
    assert len(load_dataset("isic2017", request(inner, tmp_path / "cache")).train) == 7  # the named folder works


def test_a_folder_inside_the_dataset_points_at_its_parent(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    message = error_of("isic2017", request(root / "ISIC-2017_Training_Data", tmp_path / "cache"))
    assert message.startswith(f"found ISIC 2017 in {root}, not directly in {root / 'ISIC-2017_Training_Data'}")


def test_two_copies_below_the_root_are_both_named(tmp_path):
    first = make_isic2017(tmp_path / "data" / "a")
    second = tmp_path / "data" / "b"
    shutil.copytree(first, second)
    message = error_of("isic2017", request(tmp_path / "data", tmp_path / "cache"))
    assert f"found ISIC 2017 in 2 folders around {tmp_path / 'data'} ({first}, {second})" in message


def test_parent_of_aptos_and_isic2018(tmp_path):
    aptos = make_aptos2019(tmp_path / "data" / "aptos", per_grade=2)
    isic2018 = make_isic2018(tmp_path / "data" / "ham", per_class=2)
    assert f"pass --data-root {aptos} " in error_of("aptos2019", request(tmp_path / "data", tmp_path / "cache"))
    assert f"pass --data-root {isic2018} " in error_of("isic2018", request(tmp_path / "data", tmp_path / "cache"))
    message = error_of("aptos2019", request(aptos / "train_images", tmp_path / "cache"))
    assert message.startswith(f"found APTOS 2019 in {aptos}, not directly in {aptos / 'train_images'}: ")


def test_empty_root_for_aptos_points_at_the_kaggle_explanation(tmp_path):
    message = error_of("aptos2019", request(tmp_path, tmp_path / "cache"))
    assert "expected train.csv and train_images/ directly inside it" in message
    assert f"'bench data download aptos2019 --root {tmp_path}' explains how to get it from Kaggle" in message


def test_incomplete_layout_names_what_is_missing_and_the_remedy(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    shutil.rmtree(root / "ISIC-2017_Validation_Data")
    (root / "ISIC-2017_Validation_Part3_GroundTruth.csv").unlink()
    with pytest.raises(DatasetError) as caught:
        load_dataset("isic2017", request(root, tmp_path / "cache"))
    remedy = next(line for line in str(caught.value).splitlines() if line.startswith("to fix: "))
    assert remedy == (
        f"to fix: {root} lacks ISIC-2017_Validation_Data, ISIC-2017_Validation_Part3_GroundTruth.csv of the "
        f"ISIC 2017 layout ({LAYOUT}); for the complete official set: {DOWNLOAD_HINT} EMPTY_DIR"
    )


def test_a_few_missing_images_get_no_download_remedy(tmp_path):
    root = make_isic2017(tmp_path / "isic2017")
    (root / "ISIC-2017_Training_Data" / "ISIC_0000001.jpg").unlink()
    report = check_dataset("isic2017", request(root, tmp_path / "cache"))
    assert not report.ok and report.remedy is None and "to fix" not in report.format()


@pytest.mark.realdata
def test_shared_data_parent_names_its_isic2017_folder(shared_data, tmp_path):
    if not (shared_data / "isic2017").is_dir():
        pytest.skip(f"{shared_data / 'isic2017'} not found")
    message = error_of("isic2017", request(shared_data, tmp_path / "cache"))
    assert message.startswith(f"found ISIC 2017 in {shared_data / 'isic2017'}, not directly in {shared_data}: ")


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "hint"),
    [
        ("ISIC2017", " (did you mean 'isic2017'?)"),
        ("isic-2018", " (did you mean 'isic2018'?)"),
        ("aptos", " (did you mean 'aptos2019'?)"),
        ("isic2016", " (did you mean 'isic2017' or 'isic2018'?)"),
        ("cifar10", ""),
    ],
)
def test_unknown_dataset_suggests_the_name_meant(given, hint):
    expected = f"unknown dataset {given!r}{hint}; valid names: synthetic, isic2017, isic2018, aptos2019"
    with pytest.raises(DatasetError) as caught:
        get_dataset_spec(given)
    assert str(caught.value) == expected
    assert error_of(given, DataRequest(image_size=32)) == expected


# --- decoding: a process pool only when it pays ---------------------------------------------------


@pytest.mark.parametrize("startup", [0.0, 1e9], ids=["pool", "serial-after-probe"])
def test_decoding_gives_the_same_bytes_pooled_or_not(tmp_path, monkeypatch, startup):
    """Start-up 0 makes the pool always pay, 1e9 never: both paths keep input order and every size."""
    paths = [write_image(tmp_path / f"{n}.jpg", n, (24 + n % 3, 20)) for n in range(POOL_THRESHOLD + 5)]
    paths[40] = tmp_path / "bad.jpg"
    paths[40].write_bytes(b"not a jpeg")
    serial = np.zeros((len(paths), 3, 16, 16), dtype=np.uint8)
    assert len(decode_all(paths, 16, serial, workers=1)) == 1
    monkeypatch.setattr(decode_module, "POOL_STARTUP_SECONDS", startup)
    split, sizes = np.zeros_like(serial), np.zeros((len(paths), 2), dtype=np.int64)
    failures = decode_all(paths, 16, split, sizes=sizes, workers=2)
    assert len(failures) == 1 and failures[0].startswith(f"{paths[40]}: ")
    assert np.array_equal(split, serial) and split[-1].std() > 0
    assert [tuple(size) for i, size in enumerate(sizes) if i != 40] == [
        (24 + n % 3, 20) for n in range(len(paths)) if n != 40
    ]
