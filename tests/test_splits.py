"""The seeded stratified (grouped) split: a partition, stratified, group-respecting, repeatable."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.splits import DEFAULT_FRACTIONS, stratified_split


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).choice(4, size=1000, p=[0.6, 0.25, 0.1, 0.05])


def test_partition_with_class_proportions_of_the_fractions(labels):
    splits = stratified_split(labels, DEFAULT_FRACTIONS, seed=0)
    assert np.array_equal(np.sort(np.concatenate(list(splits.values()))), np.arange(len(labels)))
    total = np.bincount(labels)
    for name, share in DEFAULT_FRACTIONS.items():
        assert np.all(np.abs(np.bincount(labels[splits[name]], minlength=4) - share * total) <= 1)


def test_groups_stay_on_one_side_and_classes_stay_balanced(labels):
    groups = np.repeat(np.arange(500), 2)  # pairs of samples, labelled by the pair's first label
    grouped_labels = labels[groups * 2]
    splits = stratified_split(grouped_labels, DEFAULT_FRACTIONS, seed=1, groups=[f"L{g}" for g in groups])
    sides = {}
    for name, index in splits.items():
        for group in groups[index]:
            assert sides.setdefault(group, name) == name
    val_share = np.bincount(grouped_labels[splits["val"]], minlength=4) / np.bincount(grouped_labels)
    assert np.all(np.abs(val_share - 0.15) < 0.03)


def test_seed_decides_the_split(labels):
    first, again, other = (stratified_split(labels, DEFAULT_FRACTIONS, seed) for seed in (7, 7, 8))
    assert all(np.array_equal(first[name], again[name]) for name in first)
    assert not np.array_equal(first["test"], other["test"])


def test_any_named_fractions(labels):
    splits = stratified_split(labels, {"train": 0.85, "test": 0.15}, seed=0)
    assert list(splits) == ["train", "test"] and abs(len(splits["test"]) - 150) <= 4


@pytest.mark.parametrize("fractions", [{"train": 0.8, "val": 0.1}, {"train": 1.1, "val": -0.1}])
def test_bad_fractions_are_refused(labels, fractions):
    with pytest.raises(ValueError, match="fractions"):
        stratified_split(labels, fractions, seed=0)


def test_no_labels_gives_empty_splits():
    assert all(len(index) == 0 for index in stratified_split([], DEFAULT_FRACTIONS, seed=0).values())
