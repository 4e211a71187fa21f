"""Batched augmentation: shapes, determinism, per-sample randomness and the exact effect of each op."""

from __future__ import annotations

import pytest
import torch

from bench.devices import place
from datasets.augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    ColorJitter,
    GaussianBlur,
    HorizontalFlip,
    RandomGrayscale,
    RandomResizedCrop,
    RandomRotation,
    Solarize,
    VerticalFlip,
    _hue_rotation,
    blur_kernel_size,
    build_eval_transform,
    build_finetune_transform,
    build_views,
    resized_crop,
)
from methods import get_method

SIZE = 32
# The published recipes, as the methods declare them (data that datasets.augment interprets).
RECIPES = {name: get_method(name).view_recipe for name in ("simclr", "byol", "barlow", "fgssl")}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(seed)


def uint8_images(n: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), generator=gen(seed), dtype=torch.uint8)


def float_images(n: int = 8, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen(seed))


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def all_views() -> list[tuple[str, BatchAugment]]:
    views = [(f"{r}-v{i + 1}", v) for r in RECIPES for i, v in enumerate(build_views(RECIPES[r], SIZE))]
    return [*views, ("finetune", build_finetune_transform(SIZE))]


VIEWS = all_views()
VIEW_IDS = [name for name, _ in VIEWS]


@pytest.mark.parametrize(("name", "view"), VIEWS, ids=VIEW_IDS)
def test_views_give_normalised_float32_of_the_right_shape(name: str, view: BatchAugment) -> None:
    out = view(uint8_images(), gen())
    assert out.shape == (8, 3, SIZE, SIZE) and out.dtype == torch.float32
    pixels = out * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_eval_transform_is_exactly_scale_and_normalise() -> None:
    images = uint8_images()
    out = build_eval_transform(SIZE)(images, gen())
    torch.testing.assert_close(out, normalise(images.float() / 255), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("name", "view"), VIEWS, ids=VIEW_IDS)
def test_views_come_out_in_channels_last_for_networks_placed_so(name: str, view: BatchAugment) -> None:
    out = view(uint8_images(), gen())
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
    network = place(torch.nn.Conv2d(3, 4, 3), torch.device("cpu"))
    assert network.weight.is_contiguous(memory_format=torch.channels_last)
    assert network(out).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("name", "view"), VIEWS, ids=VIEW_IDS)
def test_same_seed_repeats_and_other_seed_differs(name: str, view: BatchAugment) -> None:
    images = uint8_images()
    assert torch.equal(view(images, gen(1)), view(images, gen(1)))
    assert not torch.equal(view(images, gen(1)), view(images, gen(2)))


@pytest.mark.parametrize(("name", "view"), VIEWS, ids=VIEW_IDS)
def test_identical_images_get_different_views(name: str, view: BatchAugment) -> None:
    images = uint8_images(n=1).expand(32, -1, -1, -1).contiguous()
    out = view(images, gen()).flatten(1)
    distinct = {tuple(row.tolist()) for row in out}
    assert len(distinct) >= 4, f"{name}: only {len(distinct)} distinct views of 32 identical images"


@pytest.mark.parametrize(("op", "dim"), [(HorizontalFlip(0.5), -1), (VerticalFlip(0.5), -2)])
def test_flip_flips_exactly_the_selected_samples(op: HorizontalFlip | VerticalFlip, dim: int) -> None:
    x = float_images(n=32)
    out = op(x, gen())
    flipped = torch.tensor([torch.equal(o, i.flip(dim)) for o, i in zip(out, x, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert torch.all(flipped ^ kept), "every sample is either exactly flipped or exactly unchanged"
    assert 0 < int(flipped.sum()) < 32


def test_crop_with_the_full_image_box_is_identity() -> None:
    x = float_images()
    full = torch.tensor([[0.0, 0.0, SIZE, SIZE]]).expand(8, 4)
    torch.testing.assert_close(resized_crop(x, full), x, rtol=0, atol=1e-5)
    whole = RandomResizedCrop(scale=(1.0, 1.0), ratio=(1.0, 1.0))
    torch.testing.assert_close(whole(x, gen()), x, rtol=0, atol=1e-5)


def test_crop_of_a_box_matches_an_upscaled_slice() -> None:
    """An integer box of half the image, resized x2, equals bilinear interpolation of that slice."""
    x = float_images(n=2)
    box = torch.tensor([[8.0, 4.0, 24.0, 20.0]]).expand(2, 4)
    expected = torch.nn.functional.interpolate(x[..., 4:20, 8:24], size=SIZE, mode="bilinear", align_corners=False)
    # Only the interior: at the border torch clamps the sample to the slice, roi_align sees the neighbours.
    torch.testing.assert_close(resized_crop(x, box)[..., 2:-2, 2:-2], expected[..., 2:-2, 2:-2], rtol=0, atol=1e-5)


def test_crop_boxes_respect_scale_ratio_and_image() -> None:
    op = RandomResizedCrop(scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    boxes = op.sample_boxes(torch.zeros(2000, 3, SIZE, SIZE), gen())
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert boxes.min() >= 0 and boxes.max() <= SIZE + 1e-4
    area = w * h / SIZE**2
    assert area.min() >= 0.2 - 1e-4 and area.max() <= 1 + 1e-4
    ratio = w / h
    assert ratio.min() >= 3 / 4 - 1e-4 and ratio.max() <= 4 / 3 + 1e-4
    assert area.std() > 0.1 and (ratio > 1.1).any() and (ratio < 0.9).any()


def test_crop_of_a_constant_image_is_constant() -> None:
    x = torch.full((8, 3, SIZE, SIZE), 0.3)
    torch.testing.assert_close(RandomResizedCrop()(x, gen()), x, rtol=0, atol=1e-6)


def test_grayscale_gives_equal_channels_with_luma_weights() -> None:
    x = float_images()
    out = RandomGrayscale(1.0)(x, gen())
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    luma = 0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    torch.testing.assert_close(out[:, 0], luma, rtol=0, atol=1e-6)
    assert torch.equal(RandomGrayscale(0.0)(x, gen()), x)


def test_solarize_inverts_exactly_the_bright_pixels_of_selected_samples() -> None:
    x = float_images(n=32)
    out = Solarize(p=0.5)(x, gen())
    solarized = torch.where(x >= 0.5, 1 - x, x)
    hit = torch.tensor([torch.equal(o, s) for o, s in zip(out, solarized, strict=True)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x, strict=True)])
    assert torch.all(hit ^ kept) and 0 < int(hit.sum()) < 32


def test_solarize_inverts_a_pixel_at_the_threshold() -> None:
    x = torch.full((2, 3, 4, 4), 0.25)
    torch.testing.assert_close(Solarize(p=1.0, threshold=0.25)(x, gen()), torch.full_like(x, 0.75))


def test_blur_with_tiny_sigma_is_identity() -> None:
    x = float_images()
    torch.testing.assert_close(GaussianBlur(5, p=1.0, sigma=(0.1, 0.1))(x, gen()), x, rtol=0, atol=1e-6)


def test_blur_keeps_a_constant_image_and_smooths_noise() -> None:
    constant = torch.full((4, 3, SIZE, SIZE), 0.7)
    op = GaussianBlur(7, p=1.0, sigma=(1.5, 2.0))
    torch.testing.assert_close(op(constant, gen()), constant, rtol=0, atol=1e-6)
    noise = float_images()
    blurred = op(noise, gen())
    assert blurred.std() < 0.5 * noise.std()
    torch.testing.assert_close(blurred.mean(), noise.mean(), rtol=0, atol=5e-3)


def test_blur_matches_a_reference_gaussian_for_one_sigma() -> None:
    """Same sigma for every sample: the result must equal a plain separable Gaussian with reflect borders."""
    x = float_images(n=2)
    sigma, k = 1.3, 7
    taps = torch.exp(-0.5 * (torch.arange(k) - k // 2) ** 2 / sigma**2)
    taps = taps / taps.sum()
    kernel2d = (taps[:, None] * taps[None, :]).expand(3, 1, k, k)
    padded = torch.nn.functional.pad(x, (3, 3, 3, 3), mode="reflect")
    expected = torch.nn.functional.conv2d(padded, kernel2d, groups=3)
    out = GaussianBlur(k, p=1.0, sigma=(sigma, sigma))(x, gen())
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_blur_with_p_zero_is_exact_identity() -> None:
    x = float_images()
    assert torch.equal(GaussianBlur(7, p=0.0)(x, gen()), x)


def test_blur_kernel_size_is_odd_and_about_a_tenth() -> None:
    assert [blur_kernel_size(s) for s in (16, 32, 64, 128, 224)] == [3, 3, 7, 13, 23]


def test_jitter_with_zero_strength_is_identity_and_p_zero_is_exact() -> None:
    x = float_images()
    torch.testing.assert_close(ColorJitter(0, 0, 0, 0, p=1.0)(x, gen()), x, rtol=0, atol=1e-5)
    assert torch.equal(ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.0)(x, gen()), x)


def midtones(n: int = 8) -> torch.Tensor:
    """Pixels in [0.4, 0.6]: no jitter strength used below pushes them out of [0, 1], so nothing clamps."""
    return 0.4 + 0.2 * float_images(n=n)


def luma(x: torch.Tensor) -> torch.Tensor:
    return (x * torch.tensor([0.2989, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)


def per_sample_factor(out: torch.Tensor, ref: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The one blend factor f per sample with out - ref = f * (x - ref); fails if it varies within a sample."""
    f = ((out - ref) / (x - ref)).flatten(1)
    keep = (x - ref).abs().flatten(1) > 1e-2
    factors = torch.stack([row[m].median() for row, m in zip(f, keep, strict=True)])
    for row, m, factor in zip(f, keep, factors, strict=True):
        torch.testing.assert_close(row[m], factor.expand(int(m.sum())), rtol=0, atol=1e-3)
    return factors


def test_brightness_contrast_and_saturation_blend_each_sample_by_one_factor_in_range() -> None:
    """Brightness blends towards black, contrast towards the mean luma, saturation towards each pixel's luma."""
    x = midtones(n=32)
    bright = per_sample_factor(ColorJitter(0.5, 0, 0, 0, p=1.0)(x, gen()), torch.zeros_like(x), x)
    assert bright.min() >= 0.5 - 1e-3 and bright.max() <= 1.5 + 1e-3 and bright.std() > 0.1
    mean_luma = luma(x).mean(dim=(1, 2, 3), keepdim=True)
    contrast = per_sample_factor(ColorJitter(0, 0.5, 0, 0, p=1.0)(x, gen()), mean_luma, x)
    assert contrast.min() >= 0.5 - 1e-3 and contrast.max() <= 1.5 + 1e-3 and contrast.std() > 0.1
    saturation = per_sample_factor(ColorJitter(0, 0, 1.0, 0, p=1.0)(x, gen()), luma(x), x)
    assert saturation.min() >= -1e-3 and saturation.max() <= 2 + 1e-3 and saturation.std() > 0.2


def test_hue_keeps_each_pixel_luma() -> None:
    """Hue rotates chroma only (YIQ's Y is torchvision's luma to 4 decimals)."""
    x = midtones()
    out = ColorJitter(0, 0, 0, 0.5, p=1.0)(x, gen())
    assert not torch.allclose(out, x, atol=1e-3)
    torch.testing.assert_close(luma(out), luma(x), rtol=0, atol=2e-3)


def test_hue_is_a_rotation_of_the_chroma_plane() -> None:
    a, b = torch.tensor([0.4, -1.1]), torch.tensor([0.9, 2.0])
    torch.testing.assert_close(_hue_rotation(a) @ _hue_rotation(b), _hue_rotation(a + b), rtol=0, atol=1e-5)
    torch.testing.assert_close(_hue_rotation(torch.tensor([2 * torch.pi])), torch.eye(3)[None], rtol=0, atol=1e-5)


def test_hue_turns_red_towards_yellow_like_torchvision() -> None:
    red = torch.tensor([0.8, 0.2, 0.2]).view(1, 3, 1)
    turned = _hue_rotation(torch.tensor([0.3, -0.3])) @ red
    assert turned[0, 1] > turned[0, 2] and turned[1, 1] < turned[1, 2]


def test_recipes_are_the_published_ones() -> None:
    v1, v2 = build_views(RECIPES["fgssl"], 224)
    assert [type(op) for op in v1.ops] == [HorizontalFlip, RandomGrayscale, GaussianBlur]
    assert [type(op) for op in v2.ops] == [RandomGrayscale, GaussianBlur, Solarize]
    assert (v1.ops[2].p, v1.ops[2].sigma, v2.ops[1].p, v2.ops[2].p) == (1.0, (0.1, 2.0), 0.1, 0.2)
    b1, b2 = build_views(RECIPES["byol"], 64)
    assert build_views(RECIPES["barlow"], 64) == (b1, b2)
    assert (b1.ops[-2].p, b1.ops[-1].p, b2.ops[-2].p, b2.ops[-1].p) == (1.0, 0.0, 0.1, 0.2)


def test_blur_sigma_shrinks_with_the_image_below_224_px() -> None:
    assert build_views(RECIPES["fgssl"], 64)[0].ops[2].sigma == pytest.approx((0.1 * 64 / 224, 2.0 * 64 / 224))
    assert build_views(RECIPES["simclr"], 448)[0].ops[-1].sigma == (0.1, 2.0)
    s1, s2 = build_views(RECIPES["simclr"], 64)
    assert s1 == s2 and s1.ops[0].scale == (0.2, 1.0) and s1.ops[2] == ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8)


def test_unknown_view_op_names_the_valid_ones() -> None:
    recipe = ((("crop", {"scale_min": 0.2}), ("mixup", {})), ())
    with pytest.raises(ValueError, match=r"unknown view op 'mixup'.*crop, geometry, hflip"):
        build_views(recipe, SIZE)
    with pytest.raises(ValueError, match="two views"):
        build_views(recipe[:1], SIZE)


def test_bad_input_is_a_clear_error() -> None:
    view = build_eval_transform(SIZE)
    with pytest.raises(ValueError, match="expected uint8 images"):
        view(float_images(), gen())
    with pytest.raises(ValueError, match="expected uint8 images"):
        view(uint8_images(size=SIZE * 2), gen())
    with pytest.raises(ValueError, match="probability"):
        Solarize(p=1.5)


def test_runs_on_the_images_device_with_a_matching_generator() -> None:
    device = torch.device("cpu")
    images = uint8_images().to(device)
    out = build_views(RECIPES["simclr"], SIZE)[0](images, torch.Generator(device=device).manual_seed(0))
    assert out.device == device


def test_view_options_change_every_recipe() -> None:
    assert build_views(RECIPES["simclr"], 64, crop_scale_min=0.5)[0].ops[0].scale == (0.5, 1.0)
    assert build_views(RECIPES["byol"], 64, crop_scale_min=0.5)[1].ops[0].scale == (0.5, 1.0)
    jittered = {r: build_views(recipe, 64, color_jitter=2.0) for r, recipe in RECIPES.items()}
    jitters = {r: [op for v in views for op in v.ops if isinstance(op, ColorJitter)] for r, views in jittered.items()}
    assert set(jitters["simclr"]) == {ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8)}
    assert set(jitters["byol"]) == set(jitters["fgssl"]) == {ColorJitter(0.8, 0.8, 0.4, 0.2, p=0.8)}
    assert len(jitters["fgssl"]) == 2  # both FG-SSL views, which have no jitter as published
    unjittered = [op for r in RECIPES for view in build_views(RECIPES[r], 64, color_jitter=0) for op in view.ops]
    assert not any(isinstance(op, ColorJitter) for op in unjittered)
    for recipe in RECIPES.values():
        for view in build_views(recipe, 64, rotate=True):
            kinds = [type(op) for op in view.ops]
            assert RandomRotation in kinds and kinds[kinds.index(RandomRotation) + 1] is VerticalFlip


def test_rotation_turns_each_image_by_its_own_angle_about_the_centre() -> None:
    size = 33
    y, x = torch.meshgrid(torch.arange(size) - 16.0, torch.arange(size) - 16.0, indexing="ij")
    disc = (x**2 + y**2 < 10**2).float().expand(4, 3, size, size)  # looks the same at every angle
    bar = ((x.abs() < 2) & (y < 0) & (y > -12)).float().expand(4, 3, size, size)  # a spoke up from the centre
    rotate = RandomRotation()
    assert torch.allclose(rotate(torch.full((2, 3, 8, 8), 0.3), torch.Generator().manual_seed(0)), torch.tensor(0.3))
    turned_disc = rotate(disc, torch.Generator().manual_seed(1))
    assert (turned_disc - disc).abs().mean() < 0.02
    turned = rotate(bar, torch.Generator().manual_seed(1))
    assert torch.allclose(turned.sum(dim=(1, 2, 3)), bar.sum(dim=(1, 2, 3)), rtol=0.1)  # moved, not lost
    upper = turned[:, 0, :16].sum(dim=(1, 2)) / turned[:, 0].sum(dim=(1, 2))
    assert len({round(v, 2) for v in upper.tolist()}) == 4  # four images, four angles
    assert torch.equal(turned, rotate(bar, torch.Generator().manual_seed(1)))
