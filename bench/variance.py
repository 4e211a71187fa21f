"""What a frozen representation spends its variance on: the class, or something it should ignore.

Accuracy says how well the class can be read from the embeddings; it does not say what else they
encode. A method can learn a lot and still score near an untrained network, when what it learned is a
nuisance (on the synthetic data: lesion or skin brightness, drawn independently of the class). The
shares here tell those apart. All are fractions of the total variance of the L2-normalised embeddings
(kNN compares directions): ``class`` is the between-class part; a factor's share is the part along the
factor's linear trend, i.e. the variance a least-squares fit on that factor explains, summed over dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def variance_shares(
    embeddings: np.ndarray, labels: np.ndarray, factors: Mapping[str, np.ndarray] | None = None
) -> dict[str, float]:
    """``{"class": share, <factor>: share, ...}`` for ``embeddings`` (n x d, n >= 2), each in [0, 1]."""
    if embeddings.ndim != 2 or len(embeddings) < 2 or len(labels) != len(embeddings):
        raise ValueError(f"need n >= 2 embeddings (n x d) and n labels, got {embeddings.shape} and {len(labels)}")
    z = embeddings.astype(np.float64)
    z /= np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    z -= z.mean(axis=0)
    total = float((z**2).sum())
    if total <= 1e-12 * len(z):  # identical embeddings: no variance to share out
        return {name: 0.0 for name in ("class", *(factors or {}))}
    labels = np.asarray(labels)
    between = sum(float((labels == c).sum() * (z[labels == c].mean(axis=0) ** 2).sum()) for c in np.unique(labels))
    shares = {"class": between / total}
    for name, values in (factors or {}).items():
        trend = np.asarray(values, dtype=np.float64) - np.mean(values)
        norm = np.linalg.norm(trend)
        along = (trend / norm) @ z if norm > 0 else np.zeros(z.shape[1])  # each dimension's component along the trend
        shares[name] = float(along @ along) / total
    return shares
