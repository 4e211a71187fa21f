"""The jigsaw is an exact permutation of tiles, random per image, reproducible per generator."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from methods.jigsaw import jigsaw, random_orders


def tile_ids(images: torch.Tensor, n: int) -> torch.Tensor:
    """Images whose tile (i, j) is filled with the value i*n + j (per channel), for readable checks."""
    b, c, h, w = images.shape
    rows = torch.arange(h) // (h // n)
    cols = torch.arange(w) // (w // n)
    ids = (rows[:, None] * n + cols[None, :]).float()
    return ids.expand(b, c, h, w).clone()


def read_tiles(images: torch.Tensor, n: int) -> torch.Tensor:
    """The tiles as rows ``[B, n*n, C*th*tw]`` in reading order."""
    b, c, h, w = images.shape
    tiles = images.reshape(b, c, n, h // n, n, w // n).permute(0, 2, 4, 1, 3, 5)
    return tiles.reshape(b, n * n, -1)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_every_output_tile_is_one_input_tile_exactly_once(n):
    images = tile_ids(torch.empty(3, 2, 16, 16), n)
    out = read_tiles(jigsaw(images, n, generator=torch.Generator().manual_seed(0)), n)
    assert torch.all(out == out[:, :, :1]), "a tile was cut across tile boundaries"
    order = out[:, :, 0].long()
    assert torch.equal(order.sort(dim=1).values, torch.arange(n * n).expand(3, -1))


def test_random_content_keeps_the_multiset_of_tiles():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(4, 3, 12, 12, generator=g)
    out = jigsaw(images, 3, generator=g)
    for src, dst in zip(read_tiles(images, 3), read_tiles(out, 3), strict=True):
        assert sorted(map(tuple, src.tolist())) == sorted(map(tuple, dst.tolist()))


def test_grid_of_one_is_identity():
    images = torch.rand(2, 3, 8, 8)
    assert torch.equal(jigsaw(images, 1), images)


def test_per_sample_orders_differ_and_per_batch_orders_agree():
    images = tile_ids(torch.empty(8, 1, 16, 16), 4)
    per_sample = read_tiles(jigsaw(images, 4, generator=torch.Generator().manual_seed(2)), 4)[:, :, 0]
    assert len({tuple(row.tolist()) for row in per_sample}) == 8
    per_batch = read_tiles(jigsaw(images, 4, generator=torch.Generator().manual_seed(2), per_sample=False), 4)[:, :, 0]
    assert all(torch.equal(row, per_batch[0]) for row in per_batch)
    assert not torch.equal(per_batch[0], torch.arange(16).float())


def test_same_generator_seed_repeats():
    images = torch.rand(4, 3, 16, 16)
    a = jigsaw(images, 4, generator=torch.Generator().manual_seed(7))
    b = jigsaw(images, 4, generator=torch.Generator().manual_seed(7))
    c = jigsaw(images, 4, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_flows_back_to_the_right_pixels():
    images = torch.rand(2, 1, 4, 4, requires_grad=True)
    out = jigsaw(images, 2, generator=torch.Generator().manual_seed(0))
    (out * torch.arange(16.0).reshape(1, 1, 4, 4)).sum().backward()
    assert sorted(images.grad[0].flatten().tolist()) == list(range(16))


@pytest.mark.parametrize("size,n", [((30, 30), 4), ((32, 24), 16), ((32, 32), 0)])
def test_bad_grid_is_a_clear_error(size, n):
    with pytest.raises(ValueError, match="grid") as info:
        jigsaw(torch.rand(1, 3, *size), n)
    if n:
        assert f"{size[0]}x{size[1]}" in str(info.value)


@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_fast_path_matches_index_select_across_staging_groups(channels_last):
    """A batch larger than one cache-sized staging group (several groups, the last one partial): the
    numpy path gives exactly what ``index_select`` gives, and every plane keeps to its own pixels."""
    b, c, size, n = 40, 3, 64, 8
    plane = torch.arange(b * c).reshape(b, c, 1, 1)
    images = (plane * 10_000 + torch.arange(size * size).reshape(size, size)).float()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    fast = jigsaw(images, n, generator=torch.Generator().manual_seed(3))
    with_grad = jigsaw(images.clone().requires_grad_(), n, generator=torch.Generator().manual_seed(3))
    assert torch.equal(fast, with_grad.detach())
    assert torch.equal(fast.long() // 10_000, plane.expand(b, c, size, size))
    assert not torch.equal(fast, images)


def test_random_orders_are_permutations_drawn_uniformly():
    """All 24 orders of 4 tiles come up about equally often (chi-square), every row is a permutation."""
    orders = random_orders(24_000, 4, generator=torch.Generator().manual_seed(3))
    assert orders.dtype == torch.int64
    assert torch.equal(orders.sort(dim=1).values, torch.arange(4).expand(24_000, -1))
    index = {perm: i for i, perm in enumerate(itertools.permutations(range(4)))}
    counts = torch.bincount(torch.tensor([index[tuple(row)] for row in orders.tolist()]), minlength=24)
    assert chisquare(counts.numpy()).pvalue > 1e-3, counts


def test_random_orders_follow_the_generator():
    def draw(seed: int) -> torch.Tensor:
        return random_orders(3, 1024, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(draw(5), draw(5))
    assert not torch.equal(draw(5), draw(6))
    assert len({tuple(row) for row in draw(5).tolist()}) == 3
