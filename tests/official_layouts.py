"""Tiny fake datasets in the official layouts (a few small JPEG/PNG files), built in a tmp dir.

Each builder returns the root; tests then break one thing and check the message names it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from datasets.request import DataRequest

ISIC2017_PARTS = {"train": "Training", "val": "Validation", "test": "Test_v2"}
# (melanoma, seborrheic keratosis, nevus) images per split.
ISIC2017_COUNTS = {"train": (2, 2, 3), "val": (1, 1, 1), "test": (1, 2, 1)}
ISIC2018_CLASSES = ("MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC")


def request(root: Path, cache_dir: Path, **overrides) -> DataRequest:
    """A 32 px request whose cache stays inside the test's tmp dir."""
    return DataRequest(**{"image_size": 32, "root": root, "cache_dir": cache_dir, **overrides})


def write_image(path: Path, seed: int, size: tuple[int, int] = (40, 30)) -> Path:
    """A small noisy image, different per seed; format from the suffix."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[object]], newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)] + [",".join(str(value) for value in row) for row in rows]
    path.write_bytes((newline.join(lines) + newline).encode())
    return path


def truncate(path: Path) -> None:
    """Cut an image file in half: the header still parses, the pixel data ends early."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def make_isic2017(root: Path) -> Path:
    """ISIC 2017 Part 3: ``ISIC-2017_<part>_Data/*.jpg`` + CRLF ground truth, plus files to ignore."""
    number = 0
    for split, part in ISIC2017_PARTS.items():
        rows = []
        for label, count in enumerate(ISIC2017_COUNTS[split]):
            for _ in range(count):
                image_id = f"ISIC_{number:07d}"
                write_image(root / f"ISIC-2017_{part}_Data" / f"{image_id}.jpg", number)
                write_image(root / f"ISIC-2017_{part}_Data" / f"{image_id}_superpixels.png", number, (8, 8))
                rows.append((image_id, f"{float(label == 0)}", f"{float(label == 1)}"))
                number += 1
        write_csv(
            root / f"ISIC-2017_{part}_Part3_GroundTruth.csv",
            ("image_id", "melanoma", "seborrheic_keratosis"),
            rows,
            newline="\r\n",
        )
        write_csv(
            root / f"ISIC-2017_{part}_Data_metadata.csv",
            ("image_id", "age_approximate", "sex"),
            [(row[0], 50, "female") for row in rows],
        )
    return root


def make_isic2018(
    root: Path,
    per_class: int = 6,
    official_eval: bool = False,
    grouping: str | None = "ham",
    nested_ground_truth: bool = False,
) -> Path:
    """ISIC 2018 Task 3: training input + ground truth; lesions of two images each.

    ``grouping`` is ``"ham"`` (HAM10000_metadata.csv), ``"groupings"`` (LesionGroupings.csv) or None.
    ``official_eval`` adds small official validation and test sets.
    """
    ids = [f"ISIC_{number:07d}" for number in range(per_class * 7)]
    labels = [number // per_class for number in range(per_class * 7)]
    lesions = [f"HAM_{number // 2:07d}" for number in range(len(ids))]
    _write_isic2018_part(root, "Training", ids, labels, nested_ground_truth)
    if grouping == "ham":
        write_csv(
            root / "HAM10000_metadata.csv",
            ("lesion_id", "image_id", "dx", "dx_type", "age", "sex"),
            [
                (lesion, image_id, ISIC2018_CLASSES[y].lower(), "histo", 50, "male")
                for lesion, image_id, y in zip(lesions, ids, labels, strict=True)
            ],
            newline="\r\n",
        )
    elif grouping == "groupings":
        header = ("image", "lesion_id", "diagnosis_confirm_type")
        write_csv(
            root / "ISIC2018_Task3_Training_LesionGroupings.csv",
            header,
            [(image_id, lesion, "histopathology") for image_id, lesion in zip(ids, lesions, strict=True)],
        )
    if official_eval:
        for offset, part in ((1000, "Validation"), (2000, "Test")):
            eval_ids = [f"ISIC_{offset + k:07d}" for k in range(7)]
            _write_isic2018_part(root, part, eval_ids, range(7), nested_ground_truth)
    return root


def _write_isic2018_part(root: Path, part: str, ids: Sequence[str], labels: Sequence[int], nested: bool) -> None:
    for image_id in ids:
        write_image(root / f"ISIC2018_Task3_{part}_Input" / f"{image_id}.jpg", int(image_id[5:]))
    folder = root / f"ISIC2018_Task3_{part}_GroundTruth" if nested else root
    one_hot = [(image_id, *(f"{float(k == y)}" for k in range(7))) for image_id, y in zip(ids, labels, strict=True)]
    write_csv(folder / f"ISIC2018_Task3_{part}_GroundTruth.csv", ("image", *ISIC2018_CLASSES), one_hot)


def make_aptos2019(root: Path, per_grade: int = 8) -> Path:
    """APTOS 2019: ``train.csv`` (id_code,diagnosis) and ``train_images/<id_code>.png``."""
    rows = []
    for number in range(per_grade * 5):
        id_code = f"{number:012x}"
        write_image(root / "train_images" / f"{id_code}.png", number)
        rows.append((id_code, number % 5))
    write_csv(root / "train.csv", ("id_code", "diagnosis"), rows)
    return root


def replace_in(path: Path, old: str, new: str) -> None:
    """Edit a file's text in place (one occurrence), keeping its line endings."""
    text = path.read_bytes().decode()
    assert old in text, f"{old!r} not in {path}"
    path.write_bytes(text.replace(old, new, 1).encode())
