"""A seeded, procedurally generated stand-in for dermoscopy: lesion-like blobs on skin whose
classes differ only in the fine texture inside the lesion.

Colour, size, shape, position and orientation are drawn from the same distributions for every
class, and every texture is scaled to zero mean inside the lesion, so nothing coarse gives the
class away: a method has to see fine detail, the property FG-SSL is built for.
"""

from __future__ import annotations

import numpy as np

from datasets.base import Dataset, ImageSplit
from datasets.check import CheckReport, describe_subset
from datasets.request import DataRequest
from datasets.splits import stratified_subset

CLASS_NAMES = ("network", "globules", "streaks", "structureless")
# Drawn for every image from the same distributions whatever its class (lesion area: fraction of the image).
FACTOR_NAMES = ("lesion_brightness", "skin_brightness", "lesion_area")
_SPLIT_OFFSETS = {"train": 0, "val": 1, "test": 2}


def load(request: DataRequest) -> Dataset:
    """The generated splits; with ``train_limit``/``eval_limit`` each is cut to the same seeded stratified
    subset as a reader of files would take, so a limit means the same thing for every dataset."""
    sizes = dict(zip(("train", "val", "test"), request.synthetic_sizes, strict=True))
    splits = {
        name: generate_split(size, request.image_size, seed=request.split_seed * 10 + _SPLIT_OFFSETS[name], prefix=name)
        for name, size in sizes.items()
    }
    record = {"kind": "synthetic", "seed": request.split_seed, "sizes": sizes, "image_size": request.image_size}
    if request.limited:
        splits = {
            name: _select(split, stratified_subset(split.labels, request.limit_for(name), request.split_seed))
            for name, split in splits.items()
        }
        record["subset"] = request.subset_record({name: (len(splits[name]), size) for name, size in sizes.items()})
    return Dataset("synthetic", request.task or "4class", CLASS_NAMES, split_record=record, **splits)


def _select(split: ImageSplit, indices: np.ndarray) -> ImageSplit:
    factors = {name: values[indices] for name, values in split.factors.items()}
    return ImageSplit(split.images[indices], split.labels[indices], tuple(split.ids[i] for i in indices), factors)


def check(request: DataRequest) -> CheckReport:
    """Generated data has no files to go wrong: the report gives its split sizes and class counts."""
    dataset = load(request)
    counts = {name: split.class_counts(dataset.num_classes) for name, split in dataset.splits().items()}
    subset = dataset.split_record.get("subset")
    described = describe_subset(subset) if subset else None
    return CheckReport(dataset.name, dataset.task, dataset.class_names, counts, subset=described)


def generate_split(count: int, image_size: int, *, seed: int, prefix: str = "img") -> ImageSplit:
    """``count`` images with balanced classes in a seeded random order, with the nuisance factors
    each image was drawn with (``FACTOR_NAMES``), which a representation should not need."""
    if count < len(CLASS_NAMES):
        raise ValueError(f"a synthetic split needs at least {len(CLASS_NAMES)} images, got {count}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(count) % len(CLASS_NAMES))
    rendered = [_render(int(label), image_size, rng) for label in labels]
    images = np.stack([image for image, _ in rendered])
    factors = {name: np.array([drawn[name] for _, drawn in rendered]) for name in FACTOR_NAMES}
    ids = tuple(f"{prefix}_{i:05d}" for i in range(count))
    return ImageSplit(images=images, labels=labels.astype(np.int64), ids=ids, factors=factors)


def _render(label: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, float]]:
    """One image and the nuisance factors it was drawn with."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    skin_brightness, skin_tint = rng.uniform(0.9, 1.05), rng.uniform(-0.03, 0.03, 3)
    skin = (np.array([0.88, 0.69, 0.58]) * skin_brightness + skin_tint).astype(np.float32)
    lesion_brightness, lesion_tint = rng.uniform(0.6, 1.3), rng.uniform(-0.04, 0.04, 3)
    lesion = (np.array([0.48, 0.30, 0.20]) * lesion_brightness + lesion_tint).astype(np.float32)
    cy, cx = rng.uniform(0.4, 0.6, size=2)
    ry, rx = rng.uniform(0.22, 0.38, size=2)
    angle = rng.uniform(0, np.pi)
    u = ((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) / rx
    v = (-(x - cx) * np.sin(angle) + (y - cy) * np.cos(angle)) / ry
    radius = np.sqrt(u**2 + v**2)
    mask = np.clip((1.0 - radius) * 8.0, 0.0, 1.0)
    texture = _TEXTURES[label](x, y, cx, cy, size, rng)
    inside = mask > 0.5
    texture = (texture - texture[inside].mean()) / (texture[inside].std() + 1e-6)
    shade = 1.0 + rng.uniform(0.12, 0.22) * texture * mask
    image = skin[:, None, None] * (1 - mask) + lesion[:, None, None] * mask * shade
    image += rng.normal(0.0, 0.02, size=image.shape).astype(np.float32)
    drawn = {"lesion_brightness": lesion_brightness, "skin_brightness": skin_brightness, "lesion_area": np.pi * rx * ry}
    return (np.clip(image, 0.0, 1.0) * 255).round().astype(np.uint8), drawn


def _period(size: int, rng: np.random.Generator) -> float:
    """A texture period of 4-7 pixels whatever the resolution: detail stays fine."""
    return rng.uniform(4.0, 7.0) / size


def _network(x, y, cx, cy, size, rng):
    p, a = _period(size, rng), rng.uniform(0, np.pi)
    u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
    return -np.minimum(np.abs(np.sin(np.pi * u / p)), np.abs(np.sin(np.pi * v / p)))


def _globules(x, y, cx, cy, size, rng):
    p = _period(size, rng) * 1.3
    phase = rng.uniform(0, p, size=2)
    du = ((x - phase[0]) % p) / p - 0.5
    dv = ((y - phase[1]) % p) / p - 0.5
    return -np.exp(-(du**2 + dv**2) / 0.03)


def _streaks(x, y, cx, cy, size, rng):
    spokes = rng.integers(10, 18)
    theta = np.arctan2(y - cy, x - cx) + rng.uniform(0, np.pi)
    return np.cos(spokes * theta) ** 3


def _structureless(x, y, cx, cy, size, rng):
    freq = rng.uniform(1.0, 2.0, size=(3, 2))
    phase = rng.uniform(0, 2 * np.pi, size=3)
    return sum(np.sin(2 * np.pi * (f[0] * x + f[1] * y) + ph) for f, ph in zip(freq, phase, strict=True))


_TEXTURES = (_network, _globules, _streaks, _structureless)
