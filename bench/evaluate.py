"""Frozen-representation evaluation: kNN and a linear probe on embeddings computed once per split.

Model selection uses the validation split only; test numbers are computed once, at the selection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from bench.metrics import classification_metrics, confusion_and_per_class
from datasets import Dataset, ImageSplit

Embed = Callable[[torch.Tensor], torch.Tensor]
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
LINEAR_C_GRID = (0.01, 0.1, 1.0, 10.0)


@dataclass(frozen=True)
class Features:
    train: tuple[np.ndarray, np.ndarray]
    val: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ProtocolResult:
    metrics: dict[str, float]  # "<split>.<metric>"
    test_report: dict  # confusion matrix and per-class metrics on test
    selection: dict[str, float]  # hyperparameters chosen on validation


def extract_features(
    embed: Embed, dataset: Dataset, transform: Transform, device: torch.device, batch_size: int
) -> Features:
    """One pass per split through the frozen network (eval mode, no autograd)."""
    return Features(
        **{name: embed_split(embed, split, transform, device, batch_size) for name, split in dataset.splits().items()}
    )


@torch.inference_mode()
def embed_split(
    embed: Embed, split: ImageSplit, transform: Transform, device: torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    generator = torch.Generator(device=device).manual_seed(0)
    chunks = []
    for start in range(0, len(split), batch_size):
        images = torch.from_numpy(np.array(split.images[start : start + batch_size])).to(device)  # writable copy
        chunks.append(embed(transform(images, generator)).float().cpu())
    return torch.cat(chunks).numpy(), np.asarray(split.labels)


def validation_knn_accuracy(
    embed: Embed,
    dataset: Dataset,
    transform: Transform,
    device: torch.device,
    k: int,
    temperature: float,
    batch_size: int,
) -> float:
    """kNN accuracy on validation alone (train as the bank): the per-epoch signal a tuner prunes on."""
    train_x, train_y = embed_split(embed, dataset.train, transform, device, batch_size)
    val_x, val_y = embed_split(embed, dataset.val, transform, device, batch_size)
    scores = knn_scores(train_x, train_y, val_x, dataset.num_classes, k, temperature)
    return float((scores.argmax(axis=1) == val_y).mean())


def knn_scores(
    train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, num_classes: int, k: int, temperature: float
) -> np.ndarray:
    """Weighted kNN on cosine similarity (Wu et al. 2018): each of the k nearest neighbours votes for
    its class with weight exp(similarity / temperature); returns normalised class scores."""
    bank = F.normalize(torch.from_numpy(train_x), dim=1)
    query = F.normalize(torch.from_numpy(query_x), dim=1)
    similarity, index = (query @ bank.T).topk(min(k, len(bank)), dim=1)
    weights = (similarity / temperature).exp()
    votes = torch.zeros(len(query), num_classes).scatter_add_(1, torch.from_numpy(train_y)[index], weights)
    return (votes / votes.sum(dim=1, keepdim=True)).numpy()


def evaluate_knn(features: Features, num_classes: int, k: int, temperature: float, **kwargs) -> ProtocolResult:
    train_x, train_y = features.train
    scores = {
        split: knn_scores(train_x, train_y, getattr(features, split)[0], num_classes, k, temperature)
        for split in ("val", "test")
    }
    return _result(features, scores, {"k": k, "temperature": temperature}, **kwargs)


def evaluate_linear(features: Features, num_classes: int, seed: int, **kwargs) -> ProtocolResult:
    """Multinomial logistic regression on standardised features; the inverse regularisation C is
    chosen on validation balanced accuracy, then test is scored once with that C."""
    train_x, train_y = features.train
    scaler = StandardScaler().fit(train_x)
    best = None
    # One BLAS thread: beside torch's OpenMP threads, a multi-threaded OpenBLAS fights them for the
    # cores (measured on 2 cores, isic2017: 79 s for the four fits, 1.4 s with one thread).
    with threadpool_limits(limits=1, user_api="blas"):
        for c in LINEAR_C_GRID:
            model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(scaler.transform(train_x), train_y)
            val_scores = _full_proba(model, scaler.transform(features.val[0]), num_classes)
            val_bal = classification_metrics(features.val[1], val_scores)["balanced_accuracy"]
            if best is None or val_bal > best[0]:
                best = (val_bal, c, model, val_scores)
    _, c, model, val_scores = best
    scores = {"val": val_scores, "test": _full_proba(model, scaler.transform(features.test[0]), num_classes)}
    return _result(features, scores, {"C": c}, **kwargs)


def _full_proba(model: LogisticRegression, x: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities over all classes, even those absent from the training labels."""
    proba = np.zeros((len(x), num_classes))
    proba[:, model.classes_] = model.predict_proba(x)
    return proba


def _result(
    features: Features, scores: dict[str, np.ndarray], selection: dict, *, class_names: tuple[str, ...], ordinal: bool
) -> ProtocolResult:
    metrics = {}
    for split, split_scores in scores.items():
        y_true = getattr(features, split)[1]
        for name, value in classification_metrics(y_true, split_scores, ordinal=ordinal).items():
            metrics[f"{split}.{name}"] = value
    report = confusion_and_per_class(features.test[1], scores["test"], class_names)
    return ProtocolResult(metrics, report, selection)
