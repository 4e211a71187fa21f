"""SSL objectives as pure functions: tensors in, scalar out, so they can be checked by hand.

Conventions: a batch of embeddings is ``[N, D]``; every loss returns a 0-d tensor averaged as the
original papers define it, so values are comparable with published numbers.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

BarlowVariant = Literal["standard", "fgssl_code"]
BARLOW_VARIANTS: tuple[str, ...] = ("standard", "fgssl_code")
_BATCHNORM_EPS = 1e-5


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross entropy.

    The 2N embeddings are L2-normalised; each anchor's positive is its other view and the
    2N-1 other samples are its candidates (itself excluded). Mean over the 2N anchors.
    """
    _check_pair(z1, z2)
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def standardize(z: torch.Tensor, eps: float = _BATCHNORM_EPS) -> torch.Tensor:
    """Per-dimension standardisation over the batch, as ``BatchNorm1d(affine=False)`` in training mode."""
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """The D x D cross-correlation of two standardised embedding batches."""
    _check_pair(z1, z2)
    return standardize(z1).T @ standardize(z2) / z1.shape[0]


def barlow_twins_from_correlation(
    c: torch.Tensor, lambd: float = 5e-3, variant: BarlowVariant = "standard"
) -> torch.Tensor:
    """The Barlow Twins objective on a cross-correlation matrix (split out so a distributed
    caller can all-reduce ``c`` over the global batch before applying it)."""
    if variant == "standard":
        on_diag = (1 - torch.diagonal(c)).pow(2).sum()
        off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
        return on_diag + lambd * off_diag
    if variant == "fgssl_code":
        identity = torch.eye(c.shape[0], dtype=c.dtype, device=c.device)
        return lambd**2 * (c - identity).pow(2).sum()
    raise ValueError(f"unknown Barlow Twins variant {variant!r}; valid: {', '.join(BARLOW_VARIANTS)}")


def barlow_twins(
    z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, variant: BarlowVariant = "standard"
) -> torch.Tensor:
    """Barlow Twins redundancy reduction.

    ``standard``: sum_i (1 - C_ii)^2 + lambd * sum_{i != j} C_ij^2 (Zbontar et al. 2021).
    ``fgssl_code``: lambd^2 * sum_ij (C_ij - I_ij)^2, the form in the FG-SSL authors' code, which
    weights the diagonal and off-diagonal terms equally.
    """
    return barlow_twins_from_correlation(cross_correlation(z1, z2), lambd, variant)


def byol(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``2 - 2 cos(p, z)``, mean over the batch; no gradient reaches ``z``."""
    _check_pair(p, z)
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=1)).mean()


def simsiam(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetrised loss ``0.5 * (D(p1, z2) + D(p2, z1))`` with ``D(p, z) = -mean cos(p, sg(z))``.

    The stop-gradient on the projections ``z`` is what keeps SimSiam from collapsing (Chen and He 2021,
    section 4), so no gradient reaches ``z1`` or ``z2`` here; the value lies in [-1, 1].
    """
    for a, b in ((p1, p2), (p1, z2), (p2, z1)):
        _check_pair(a, b)
    return 0.5 * (_negative_cosine(p1, z2) + _negative_cosine(p2, z1))


def _negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -F.cosine_similarity(p, z.detach(), dim=1).mean()


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected two [N, D] batches of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError("a contrastive or correlation loss needs at least 2 samples per batch")
