"""The seeded stratified (grouped) split: a partition, stratified, group-respecting, repeatable; and the
stratified subset for quick runs: proportions kept, every class present, repeatable, capped."""

from __future__ import annotations

import numpy as np
import pytest

from datasets.splits import DEFAULT_FRACTIONS, stratified_split, stratified_subset


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


@pytest.mark.parametrize("limit", [10, 64, 256, 999])
def test_subset_keeps_class_proportions(labels, limit):
    chosen = stratified_subset(labels, limit, seed=0)
    assert len(chosen) == limit and len(set(chosen.tolist())) == limit
    assert np.array_equal(chosen, np.sort(chosen)) and chosen.min() >= 0 and chosen.max() < len(labels)
    counts, total = np.bincount(labels[chosen], minlength=4), np.bincount(labels)
    assert np.all(np.abs(counts - limit * total / len(labels)) < 1.5), counts


def test_subset_keeps_every_class_even_a_rare_one():
    labels = np.array([0] * 500 + [1] * 300 + [2] * 199 + [3])  # class 3: one sample in 1000
    for limit in (4, 5, 20):
        assert set(labels[stratified_subset(labels, limit, seed=3)].tolist()) == {0, 1, 2, 3}


def test_subset_smaller_than_the_classes_takes_the_largest_ones():
    labels = np.array([0] * 5 + [1] * 50 + [2] * 20)
    assert sorted(labels[stratified_subset(labels, 2, seed=0)].tolist()) == [1, 2]


def test_subset_is_seeded(labels):
    first, again, other = (stratified_subset(labels, 100, seed) for seed in (7, 7, 8))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("limit", [None, 1000, 5000])
def test_subset_at_or_above_the_size_is_everything(labels, limit):
    assert np.array_equal(stratified_subset(labels, limit, seed=0), np.arange(len(labels)))


@pytest.mark.parametrize("limit", [0, -3])
def test_subset_refuses_a_limit_below_one(labels, limit):
    with pytest.raises(ValueError, match="at least 1"):
        stratified_subset(labels, limit, seed=0)
