"""Variance shares: by hand on a small case, and the properties that make them readable."""

import numpy as np
import pytest

from bench.variance import variance_shares

# Unit rows with mean 0: total variance 4. Class means (0.8, 0.4) and (-0.8, -0.4), two rows each:
# between-class 2 * 0.8 + 2 * 0.8 = 3.2, share 0.8.
ROWS = np.array([[1.0, 0.0], [0.6, 0.8], [-1.0, 0.0], [-0.6, -0.8]])
LABELS = np.array([0, 0, 1, 1])


def test_class_and_factor_shares_by_hand():
    # Factor (1, 1, -1, -1) / 2 against the rows: covariances 1.6 and 0.8, 1.6^2 + 0.8^2 = 3.2 of 4.
    # Factor (1, -1, 1, -1) / 2: covariances 0 and 0.
    shares = variance_shares(ROWS, LABELS, {"same_as_class": [3, 3, 1, 1], "across": [1, 0, 1, 0]})
    assert shares == pytest.approx({"class": 0.8, "same_as_class": 0.8, "across": 0.0})


def test_shares_ignore_each_rows_length():
    lengths = np.array([[2.0], [0.5], [7.0], [1.5]])
    assert variance_shares(ROWS * lengths, LABELS, {"f": [3, 1, 2, 5]}) == pytest.approx(
        variance_shares(ROWS, LABELS, {"f": [3, 1, 2, 5]})
    )


def test_embeddings_made_of_the_class_or_of_a_factor_are_told_apart():
    rng = np.random.default_rng(0)
    labels = np.arange(400) % 4
    brightness = rng.uniform(0.6, 1.3, 400)
    noise = rng.normal(0, 0.05, (400, 8))
    class_made = np.eye(8)[labels] + noise
    factor_made = np.outer(brightness - 0.95, np.ones(8)) + np.eye(8)[4] + noise
    of_class = variance_shares(class_made, labels, {"brightness": brightness})
    of_factor = variance_shares(factor_made, labels, {"brightness": brightness})
    assert of_class["class"] > 0.9 and of_class["brightness"] < 0.05
    assert of_factor["brightness"] > 0.8 and of_factor["class"] < 0.05


def test_identical_embeddings_have_nothing_to_share():
    assert variance_shares(np.ones((5, 3)), np.arange(5) % 2, {"f": np.arange(5)}) == {"class": 0.0, "f": 0.0}


def test_needs_one_label_per_embedding():
    with pytest.raises(ValueError, match="n labels"):
        variance_shares(ROWS, LABELS[:3])
