"""The synthetic default: seeded, balanced, classes that differ only in fine texture, and the
nuisance factors of every image recorded."""

import numpy as np
import pytest
from scipy import stats

from datasets import DataRequest, ImageSplit, load_dataset
from datasets.synthetic import CLASS_NAMES, FACTOR_NAMES, generate_split


def test_seeded_and_balanced():
    a = generate_split(40, 32, seed=3)
    b = generate_split(40, 32, seed=3)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, generate_split(40, 32, seed=4).images)
    assert a.images.shape == (40, 3, 32, 32) and a.images.dtype == np.uint8
    assert a.class_counts(len(CLASS_NAMES)) == [10, 10, 10, 10]


def test_splits_differ_and_follow_the_requested_sizes():
    data = load_dataset("synthetic", DataRequest(image_size=32, synthetic_sizes=(40, 12, 8)))
    assert (len(data.train), len(data.val), len(data.test)) == (40, 12, 8)
    assert not np.array_equal(data.train.images[:8], data.test.images)
    assert data.class_names == CLASS_NAMES


def test_classes_do_not_differ_in_mean_colour_or_lesion_size():
    split = generate_split(400, 48, seed=0)
    images = split.images.astype(np.float64) / 255
    colour = images.mean(axis=(2, 3))
    darkness = (images.mean(axis=1) < 0.45).mean(axis=(1, 2))  # fraction of lesion-dark pixels
    per_class_colour = np.array([colour[split.labels == c].mean(axis=0) for c in range(4)])
    per_class_size = np.array([darkness[split.labels == c].mean() for c in range(4)])
    assert np.ptp(per_class_colour, axis=0).max() < 0.03
    assert np.ptp(per_class_size) < 0.2 * per_class_size.mean() + 0.02


def test_classes_differ_in_high_frequency_energy():
    split = generate_split(200, 64, seed=1)
    gray = split.images.astype(np.float64).mean(axis=1)
    detail = np.abs(np.diff(gray, axis=2)).mean(axis=(1, 2))
    means = [detail[split.labels == c].mean() for c in range(4)]
    assert means[3] < min(means[:3])  # structureless lesions have the least fine detail


def test_each_image_comes_with_the_nuisance_factors_it_was_drawn_with():
    split = generate_split(200, 48, seed=2)
    assert set(split.factors) == set(FACTOR_NAMES)
    gray = split.images.astype(np.float64).mean(axis=1) / 255
    corners = np.concatenate([gray[:, :3, :3], gray[:, -3:, -3:]], axis=1).mean(axis=(1, 2))  # skin
    dark = gray < corners[:, None, None] - 0.15  # lesion pixels
    lesion_mean = np.array([g[d].mean() for g, d in zip(gray, dark, strict=True)])
    assert stats.pearsonr(split.factors["skin_brightness"], corners)[0] > 0.9
    assert stats.pearsonr(split.factors["lesion_brightness"], lesion_mean)[0] > 0.9
    assert stats.pearsonr(split.factors["lesion_area"], dark.mean(axis=(1, 2)))[0] > 0.8


def test_nuisance_factors_are_drawn_alike_for_every_class():
    split = generate_split(400, 32, seed=0)
    for name, values in split.factors.items():
        assert stats.kruskal(*[values[split.labels == c] for c in range(4)]).pvalue > 0.05, name


def test_a_split_refuses_factors_that_do_not_match_its_images():
    split = generate_split(8, 32, seed=0)
    with pytest.raises(ValueError, match="lesion_area need one value per image"):
        ImageSplit(split.images, split.labels, split.ids, factors={"lesion_area": np.ones(7)})
