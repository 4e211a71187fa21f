"""The collapse measure: 0 for identical embeddings, 1 for an orthonormal set, blind to row scale."""

import pytest
import torch

from bench.collapse import embedding_spread


def test_identical_embeddings_have_zero_spread():
    assert embedding_spread(torch.ones(8, 5) * torch.tensor([1.0, -2.0, 3.0, 0.5, 4.0])) == pytest.approx(0.0)


def test_orthonormal_rows_have_spread_one():
    # each column: one 1 among d rows -> unbiased std 1/sqrt(d), times sqrt(d) = 1
    assert embedding_spread(torch.eye(16)) == pytest.approx(1.0)


def test_spread_ignores_each_rows_length():
    z = torch.randn(64, 32, generator=torch.Generator().manual_seed(0))
    scaled = z * torch.rand(64, 1, generator=torch.Generator().manual_seed(1)).add(0.5)
    assert embedding_spread(scaled) == pytest.approx(embedding_spread(z))
    same_direction = torch.rand(64, 1, generator=torch.Generator().manual_seed(2)).add(0.1) * z[:1]
    assert embedding_spread(same_direction) == pytest.approx(0.0, abs=1e-6)
    assert embedding_spread(z) == pytest.approx(1.0, abs=0.1)  # Gaussian rows: evenly spread


def test_needs_a_matrix_of_at_least_two_rows():
    with pytest.raises(ValueError, match="n >= 2"):
        embedding_spread(torch.ones(1, 4))
