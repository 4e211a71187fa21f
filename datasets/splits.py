"""Seeded, stratified, optionally grouped splits for datasets without official val/test sets.

Written here rather than taken from scikit-learn so that a seed names the same split on every
machine and library version; the ids per split are recorded with each run anyway.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

DEFAULT_FRACTIONS = {"train": 0.70, "val": 0.15, "test": 0.15}


def stratified_split(
    labels: Sequence[int], fractions: Mapping[str, float], seed: int, groups: Sequence[str] | None = None
) -> dict[str, np.ndarray]:
    """Sorted sample indices per split name, with class proportions close to ``fractions``.

    All samples of one group (e.g. one lesion photographed several times) land in the same split,
    which keeps near-duplicate images from leaking between training and evaluation.
    Groups are placed largest first (ties in seeded random order), each into the split that still
    lacks the most samples of the group's classes.
    """
    shares = np.array(list(fractions.values()), dtype=float)
    if np.any(shares <= 0) or not np.isclose(shares.sum(), 1.0):
        raise ValueError(f"split fractions must be positive and sum to 1, got {dict(fractions)}")
    labels = np.asarray(labels, dtype=np.int64)
    if groups is None:
        group_of = np.arange(len(labels))
    else:
        group_of = np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)
    num_groups, num_classes = int(group_of.max(initial=-1)) + 1, int(labels.max(initial=-1)) + 1
    group_counts = np.zeros((num_groups, num_classes))
    np.add.at(group_counts, (group_of, labels), 1)
    group_sizes = group_counts.sum(axis=1)

    target = shares[:, None] * group_counts.sum(axis=0)[None, :]
    filled = np.zeros_like(target)
    shuffled = np.random.default_rng(seed).permutation(num_groups)
    order = shuffled[np.argsort(-group_sizes[shuffled], kind="stable")]
    split_of_group = np.empty(num_groups, dtype=np.int64)
    for group in order:
        choice = int(np.argmax((target - filled) @ group_counts[group]))
        filled[choice] += group_counts[group]
        split_of_group[group] = choice
    split_of_sample = split_of_group[group_of]
    return {name: np.flatnonzero(split_of_sample == index) for index, name in enumerate(fractions)}


def stratified_subset(labels: Sequence[int], limit: int | None, seed: int) -> np.ndarray:
    """Sorted indices of at most ``limit`` samples keeping the class proportions, for quick runs.

    Every class present keeps at least one sample when ``limit`` allows it (else the largest classes
    get one each), so a small run still evaluates all classes. Within a class the samples are taken in
    one seeded order, so the same seed and limit always name the same images; ``limit`` None or at
    least the number of samples returns them all.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if limit is not None and limit < 1:
        raise ValueError(f"a subset needs a limit of at least 1 sample, got {limit}")
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    counts = np.bincount(labels)
    present = np.flatnonzero(counts)
    ideal = limit * counts / len(labels)
    if limit <= len(present):  # room for one sample of only some classes: the largest ones
        quota = np.zeros_like(counts)
        quota[present[np.argsort(-counts[present], kind="stable")[:limit]]] = 1
    else:
        quota = np.minimum(np.maximum(np.floor(ideal).astype(np.int64), counts > 0), counts)
        while quota.sum() > limit:  # the one-per-class floor overshot: trim the most over-served class
            quota[np.argmax(np.where(quota > 1, quota - ideal, -np.inf))] -= 1
        while quota.sum() < limit:  # largest remainder first
            quota[np.argmax(np.where(quota < counts, ideal - quota, -np.inf))] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == label))[: quota[label]] for label in present]
    return np.sort(np.concatenate(chosen))
