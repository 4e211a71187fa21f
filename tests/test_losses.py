"""Losses against hand-computed values, an independent loop implementation, and their properties."""

import math

import pytest
import torch

from methods.losses import barlow_twins, byol, cross_correlation, nt_xent

# Four 2-d points whose columns have mean 0, variance 1 and no correlation: standardised as they are.
DECORRELATED = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
BN_SHRINK = 1 / math.sqrt(1 + 1e-5)  # BatchNorm's eps makes a unit-variance column slightly smaller


def test_nt_xent_hand_computed():
    # Each anchor: positive similarity 1, two candidates at similarity 0, temperature 0.5.
    z = torch.eye(2, dtype=torch.float64)
    expected = -math.log(math.exp(2) / (math.exp(2) + 2))
    assert nt_xent(z, z.clone(), temperature=0.5).item() == pytest.approx(expected, rel=1e-12)


def nt_xent_by_loops(z1, z2, temperature):
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1).tolist()
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        positive = (i + n2 // 2) % n2
        sims = [sum(a * b for a, b in zip(z[i], z[j], strict=True)) / temperature for j in range(n2)]
        denominator = sum(math.exp(s) for j, s in enumerate(sims) if j != i)
        total += -math.log(math.exp(sims[positive]) / denominator)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_nt_xent_matches_loop_implementation(temperature):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(nt_xent_by_loops(z1, z2, temperature), rel=1e-10)


def test_nt_xent_ignores_scale_and_prefers_aligned_views():
    g = torch.Generator().manual_seed(1)
    z1, other = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert nt_xent(z1, 3 * z1).item() == pytest.approx(nt_xent(z1, z1).item(), rel=1e-6)
    assert nt_xent(z1, z1).item() < nt_xent(z1, other).item()


def test_barlow_twins_is_zero_at_identity_correlation():
    loss = barlow_twins(DECORRELATED, DECORRELATED.clone(), lambd=5e-3)
    assert loss.item() == pytest.approx(2 * (1 - BN_SHRINK**2) ** 2, abs=1e-12)


def test_barlow_twins_hand_computed_for_swapped_dimensions():
    # z2 swaps the two columns: C = [[0, 1], [1, 0]] (times BatchNorm's shrink squared).
    c = BN_SHRINK**2
    swapped = DECORRELATED[:, [1, 0]]
    assert barlow_twins(DECORRELATED, swapped, lambd=5e-3).item() == pytest.approx(2 + 5e-3 * 2 * c**2, rel=1e-9)
    authors = barlow_twins(DECORRELATED, swapped, lambd=5e-3, variant="fgssl_code").item()
    assert authors == pytest.approx(5e-3**2 * (2 + 2 * c**2), rel=1e-9)


def test_barlow_twins_matches_batchnorm_and_loops():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(6, 4, generator=g, dtype=torch.float64)
    bn = torch.nn.BatchNorm1d(4, affine=False).double().train()
    a, b = bn(z1).tolist(), bn(z2).tolist()
    c = [[sum(a[k][i] * b[k][j] for k in range(6)) / 6 for j in range(4)] for i in range(4)]
    expected = sum((1 - c[i][i]) ** 2 for i in range(4)) + 0.01 * sum(
        c[i][j] ** 2 for i in range(4) for j in range(4) if i != j
    )
    assert barlow_twins(z1, z2, lambd=0.01).item() == pytest.approx(expected, rel=1e-10)


def test_cross_correlation_is_symmetric_in_its_arguments_up_to_transpose():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(10, 5, generator=g), torch.randn(10, 5, generator=g)
    torch.testing.assert_close(cross_correlation(z1, z2), cross_correlation(z2, z1).T)


def test_barlow_unknown_variant_is_named():
    with pytest.raises(ValueError, match="fgssl_code"):
        barlow_twins(DECORRELATED, DECORRELATED, variant="nope")


def test_byol_values_and_stop_gradient():
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    assert byol(z * 5, z).item() == pytest.approx(0.0, abs=1e-7)
    assert byol(-z, z).item() == pytest.approx(4.0)
    p = torch.tensor([[1.0, 1.0], [1.0, 0.0]], requires_grad=True)
    loss = byol(p, z)
    assert loss.item() == pytest.approx(2 - 2 * (1 / math.sqrt(2) + 0) / 2)
    loss.backward()
    assert z.grad is None and p.grad is not None


@pytest.mark.parametrize("loss", [nt_xent, barlow_twins, byol])
def test_losses_reject_mismatched_or_tiny_batches(loss):
    with pytest.raises(ValueError, match="shape"):
        loss(torch.randn(4, 3), torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 2"):
        loss(torch.randn(1, 3), torch.randn(1, 3))
