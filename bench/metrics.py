"""Classification metrics medical readers expect, computed with scikit-learn from class scores."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn import metrics


def classification_metrics(y_true: np.ndarray, scores: np.ndarray, *, ordinal: bool = False) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and macro one-vs-rest AUC (plus quadratic weighted kappa for
    ordinal grades such as APTOS). ``scores`` are per-class probabilities ``[N, classes]``.

    AUC is NaN when a split lacks a class, rather than a number over fewer classes than the name says.
    """
    num_classes = scores.shape[1]
    labels = np.arange(num_classes)
    y_pred = scores.argmax(axis=1)
    result = {
        "accuracy": metrics.accuracy_score(y_true, y_pred),
        "balanced_accuracy": _quiet(metrics.balanced_accuracy_score, y_true, y_pred),
        "f1_macro": metrics.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0),
        "auc_macro": _macro_auc(y_true, scores, labels),
    }
    if ordinal:
        result["qwk"] = metrics.cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic")
    return {k: float(v) for k, v in result.items()}


def confusion_and_per_class(y_true: np.ndarray, scores: np.ndarray, class_names: tuple[str, ...]) -> dict:
    """Artifacts for a run: the confusion matrix and per-class precision/recall/F1/support."""
    labels = np.arange(len(class_names))
    y_pred = scores.argmax(axis=1)
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return {
        "class_names": list(class_names),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "per_class": [
            {"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
    }


def _macro_auc(y_true: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> float:
    if len(np.unique(y_true)) < len(labels):
        return float("nan")
    if len(labels) == 2:
        return metrics.roc_auc_score(y_true, scores[:, 1])
    probs = scores / scores.sum(axis=1, keepdims=True)
    return metrics.roc_auc_score(y_true, probs, multi_class="ovr", average="macro", labels=labels)


def _quiet(fn, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args)


def trivial_baselines(y_true: np.ndarray, num_classes: int, split: str) -> dict[str, float]:
    """What a classifier that learned nothing scores on ``split``: always predicting the most frequent
    class (``baseline.majority.*``) and guessing uniformly at random (``baseline.chance.*``, the expected
    score). A method's accuracy means something only above both; balanced accuracy, 1/K for either."""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=num_classes)
    chance = 1.0 / num_classes
    return {
        f"baseline.majority.{split}.accuracy": float(counts.max() / counts.sum()),
        f"baseline.majority.{split}.balanced_accuracy": chance,
        f"baseline.chance.{split}.accuracy": chance,
        f"baseline.chance.{split}.balanced_accuracy": chance,
    }
