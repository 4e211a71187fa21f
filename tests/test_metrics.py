"""Metrics against hand-computed values, including missing classes and ordinal grades."""

import numpy as np
import pytest

from bench.evaluate import Features, evaluate_linear, knn_scores
from bench.metrics import classification_metrics, confusion_and_per_class, trivial_baselines


def one_hot(predictions, classes):
    return np.eye(classes)[predictions]


def test_hand_computed_imbalanced_case():
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    m = classification_metrics(y_true, one_hot(y_pred, 3))
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 1) / 3)
    # per-class F1: class0 p=1 r=3/4; class1 p=1/2 r=1/2; class2 p=2/3 r=1
    f1 = [2 * 1 * 0.75 / 1.75, 0.5, 2 * (2 / 3) / (5 / 3)]
    assert m["f1_macro"] == pytest.approx(sum(f1) / 3)


def test_auc_is_nan_when_a_class_is_missing_and_exact_when_separable():
    y_true = np.array([0, 0, 1, 1])
    scores = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9]])
    assert classification_metrics(y_true, scores)["auc_macro"] == pytest.approx(1.0)
    three = np.hstack([scores, np.zeros((4, 1))])
    assert np.isnan(classification_metrics(y_true, three)["auc_macro"])


def test_quadratic_weighted_kappa_for_grades():
    grades = np.array([0, 1, 2, 3, 4])
    assert classification_metrics(grades, one_hot(grades, 5), ordinal=True)["qwk"] == pytest.approx(1.0)
    off_by_one = classification_metrics(grades, one_hot(np.array([1, 2, 3, 4, 4]), 5), ordinal=True)["qwk"]
    far_off = classification_metrics(grades, one_hot(np.array([4, 4, 0, 0, 0]), 5), ordinal=True)["qwk"]
    assert far_off < 0 < off_by_one < 1
    assert "qwk" not in classification_metrics(grades, one_hot(grades, 5))


def test_confusion_and_per_class_report():
    report = confusion_and_per_class(np.array([0, 1, 1]), one_hot(np.array([0, 0, 1]), 2), ("a", "b"))
    assert report["confusion_matrix"] == [[1, 0], [1, 1]]
    assert report["per_class"][1] == {
        "class": "b",
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }


def test_knn_weighted_votes_by_hand():
    bank = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]], dtype=np.float32)
    labels = np.array([0, 0, 1])
    scores = knn_scores(bank, labels, np.array([[1.0, 0.05]], dtype=np.float32), 2, k=2, temperature=1.0)
    assert scores.argmax() == 0 and scores[0, 1] == 0
    scores = knn_scores(bank, labels, np.array([[0.0, 1.0]], dtype=np.float32), 2, k=3, temperature=0.1)
    sims = bank @ np.array([0.0, 1.0]) / np.linalg.norm(bank, axis=1)
    weights = np.exp(sims / 0.1)
    assert scores[0, 1] == pytest.approx(weights[2] / weights.sum(), rel=1e-5)


def test_linear_probe_separates_separable_features_and_selects_on_validation():
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, 3, n)
        return (np.eye(3)[y] * 3 + rng.normal(0, 0.3, (n, 3))).astype(np.float32), y

    result = evaluate_linear(
        Features(split(60), split(30), split(30)), 3, seed=0, class_names=("a", "b", "c"), ordinal=False
    )
    assert result.metrics["test.accuracy"] == 1.0 and result.selection["C"] in (0.01, 0.1, 1.0, 10.0)


def test_trivial_baselines_by_hand():
    # ISIC 2017's official test split: 117 melanoma, 90 seborrheic keratosis, 393 nevus.
    labels = np.array([0] * 117 + [1] * 90 + [2] * 393)

    b = trivial_baselines(labels, 3, "test")
    assert b["baseline.majority.test.accuracy"] == pytest.approx(393 / 600)
    assert b["baseline.chance.test.accuracy"] == pytest.approx(1 / 3)
    assert b["baseline.majority.test.balanced_accuracy"] == b["baseline.chance.test.balanced_accuracy"] == 1 / 3
    # A class absent from the split still counts among the K classes a guess can name.
    assert trivial_baselines(np.array([0, 0, 1]), 4, "val")["baseline.chance.val.accuracy"] == 0.25
