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
