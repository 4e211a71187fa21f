"""Batched, per-sample random image augmentation on the training device.

Images are decoded once into a uint8 cache, so augmentation is the only per-epoch image work; doing it on
whole batches (no Python loop over images) keeps it cheap next to the model on CPU and free on a GPU.
Every random draw uses the caller's ``torch.Generator`` on the images' device, so a seeded run repeats
exactly on the same device. Ops are small frozen dataclasses, so a recipe below reads as data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from datasets.augmix import AugMix

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
VIEW_OPS = ("crop", "geometry", "hflip", "color_jitter", "grayscale", "blur", "solarize")

_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale (ITU-R 601-2 luma)
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


class Op(Protocol):
    """One batched op: float32 ``[B, 3, H, W]`` in [0, 1] -> same, parameters drawn per sample."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


def _rand(x: torch.Tensor, generator: torch.Generator, *shape: int) -> torch.Tensor:
    """Uniform [0, 1) numbers, one row per sample, on the batch's device."""
    return torch.rand(x.shape[0], *shape, generator=generator, device=x.device)


def _per_sample(values: torch.Tensor) -> torch.Tensor:
    """Shape a per-sample ``[B]`` tensor to broadcast over ``[B, C, H, W]``."""
    return values.view(-1, 1, 1, 1)


def _select(mask: torch.Tensor, chosen: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Per sample, ``chosen`` where ``mask[i]`` else ``other``: ``torch.where`` semantics for finite inputs.

    A lerp with 0/1 weights returns one end exactly, and unlike ``torch.where`` it is vectorised on CPU
    (about 4x faster on a 64-image batch); pixels here are always finite, so nothing leaks across.
    """
    return torch.lerp(other, chosen, _per_sample(mask.to(other.dtype)))


def _uniform(u: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * u


def _check_probability(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p}")


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma as ``[B, 1, H, W]``, as one matrix product rather than three multiply-adds over the batch."""
    weights = torch.tensor([_GRAY_WEIGHTS], device=x.device, dtype=x.dtype)
    return (weights @ x.flatten(2)).view(x.shape[0], 1, *x.shape[2:])


def _blend(a: torch.Tensor, b: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * a + (1 - factor) * b`` per sample, clamped as torchvision's ``_blend`` does (one lerp)."""
    return torch.lerp(b.expand_as(a), a, _per_sample(factor)).clamp_(0.0, 1.0)


@dataclass(frozen=True)
class RandomResizedCrop:
    """Crop a random box and resize it back to the input size, all boxes in one ``roi_align`` call.

    Boxes are sampled like torchvision's RandomResizedCrop (area fraction uniform in ``scale``, aspect
    ratio log-uniform in ``ratio``), but continuous rather than rounded to whole pixels. Instead of
    torchvision's loop of up to 10 tries, 10 candidates per sample are drawn at once and the first that
    fits inside the image is kept; if none fits, the first is clamped to the image (torchvision falls
    back to a centre crop). Resizing is bilinear: crops are never larger than the output, so the
    adaptive sampling ratio takes one sample per output pixel, as torchvision's bilinear resize does.
    """

    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    tries: int = 10

    def __post_init__(self) -> None:
        if not (0.0 < self.scale[0] <= self.scale[1] <= 1.0 and 0.0 < self.ratio[0] <= self.ratio[1]):
            raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {self}")

    def sample_boxes(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-sample boxes ``[B, 4]`` as (x1, y1, x2, y2) in pixel units (the image spans 0..W, 0..H)."""
        height, width = x.shape[-2:]
        u = _rand(x, generator, self.tries, 2)
        area = height * width * _uniform(u[..., 0], *self.scale)
        aspect = torch.exp(_uniform(u[..., 1], math.log(self.ratio[0]), math.log(self.ratio[1])))
        w = torch.sqrt(area * aspect)
        h = torch.sqrt(area / aspect)
        first_fit = ((w <= width) & (h <= height)).to(torch.uint8).argmax(dim=1, keepdim=True)
        w = w.gather(1, first_fit).squeeze(1).clamp(max=width)
        h = h.gather(1, first_fit).squeeze(1).clamp(max=height)
        corner = _rand(x, generator, 2)
        x1 = corner[:, 0] * (width - w)
        y1 = corner[:, 1] * (height - h)
        return torch.stack([x1, y1, x1 + w, y1 + h], dim=1)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return resized_crop(x, self.sample_boxes(x, generator))


def resized_crop(x: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Crop box ``boxes[i]`` (x1, y1, x2, y2 in pixels) out of image ``i`` and resize it to the input size."""
    index = torch.arange(x.shape[0], device=x.device, dtype=x.dtype).unsqueeze(1)
    rois = torch.cat([index, boxes.to(x.dtype)], dim=1)
    return roi_align(x, rois, output_size=tuple(x.shape[-2:]), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


@dataclass(frozen=True)
class HorizontalFlip:
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _select(_rand(x, generator) < self.p, x.flip(-1), x)


@dataclass(frozen=True)
class VerticalFlip:
    p: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _select(_rand(x, generator) < self.p, x.flip(-2), x)


@dataclass(frozen=True)
class RandomRotation:
    """Rotate each image by its own angle, uniform over the full turn, about its centre (bilinear).

    Corners the rotation brings in from outside are filled by reflecting the image at its border, so
    no black wedges appear that a method could key on. One ``affine_grid``/``grid_sample`` pair for
    the whole batch."""

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = _rand(x, generator) * (2 * math.pi)
        cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], dim=1), torch.stack([sin, cos, zero], dim=1)], dim=1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


@dataclass(frozen=True)
class ColorJitter:
    """Brightness, contrast, saturation and hue with per-sample factors, applied with probability ``p``.

    Factors are drawn as torchvision draws them (uniform in [max(0, 1 - v), 1 + v]; hue uniform in
    [-hue, hue] turns). Two deliberate differences: the order is fixed (brightness, contrast, saturation,
    hue) where torchvision shuffles it per image, and hue is a rotation of the chroma plane in YIQ
    space (one 3x3 matrix per sample) rather than an HSV round trip; it keeps luma, and is clamped.
    """

    brightness: float
    contrast: float
    saturation: float
    hue: float
    p: float = 0.8

    def __post_init__(self) -> None:
        _check_probability(self.p)
        if min(self.brightness, self.contrast, self.saturation) < 0 or not 0 <= self.hue <= 0.5:
            raise ValueError(f"jitter strengths must be >= 0 and hue in [0, 0.5], got {self}")

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = _rand(x, generator, 5)
        bright = _uniform(u[:, 1], max(0.0, 1 - self.brightness), 1 + self.brightness)
        contrast = _uniform(u[:, 2], max(0.0, 1 - self.contrast), 1 + self.contrast)
        saturation = _uniform(u[:, 3], max(0.0, 1 - self.saturation), 1 + self.saturation)
        angle = _uniform(u[:, 4], -self.hue, self.hue) * (2 * math.pi)
        out = (x * _per_sample(bright)).clamp_(0.0, 1.0)
        mean_luma = _gray(out.mean(dim=(2, 3), keepdim=True))  # luma is linear: gray of the mean colour
        out = _blend(out, mean_luma, contrast)
        out = _blend(out, _gray(out), saturation)
        out = torch.einsum("bij,bjhw->bihw", _hue_rotation(angle), out).clamp_(0.0, 1.0)
        return _select(u[:, 0] < self.p, out, x)


def _hue_rotation(angle: torch.Tensor) -> torch.Tensor:
    """Per-sample RGB matrices ``[B, 3, 3]`` rotating the (I, Q) chroma plane by ``angle`` radians.

    The sign follows torchvision: a positive angle turns red towards yellow, as a positive hue shift does.
    """
    cos, sin = torch.cos(angle), torch.sin(angle)
    rotation = torch.zeros(angle.shape[0], 3, 3, device=angle.device, dtype=angle.dtype)
    rotation[:, 0, 0] = 1.0
    rotation[:, 1, 1], rotation[:, 1, 2] = cos, sin
    rotation[:, 2, 1], rotation[:, 2, 2] = -sin, cos
    to_yiq = _RGB_TO_YIQ.to(angle.device, angle.dtype)
    to_rgb = _YIQ_TO_RGB.to(angle.device, angle.dtype)
    return to_rgb @ rotation @ to_yiq


@dataclass(frozen=True)
class RandomGrayscale:
    p: float = 0.2

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return _select(_rand(x, generator) < self.p, _gray(x).expand_as(x), x)


@dataclass(frozen=True)
class GaussianBlur:
    """Gaussian blur with a per-sample sigma, as one separable grouped convolution over the batch.

    Samples not selected (probability ``1 - p``) get a unit impulse kernel, so they pass through
    exactly and the batch needs no gather or scatter. Borders are reflect-padded.
    """

    kernel_size: int
    p: float = 0.5
    sigma: tuple[float, float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        _check_probability(self.p)
        if self.kernel_size < 3 or self.kernel_size % 2 == 0 or not 0 < self.sigma[0] <= self.sigma[1]:
            raise ValueError(f"kernel_size must be odd and >= 3, and 0 < sigma[0] <= sigma[1]; got {self}")

    def kernels(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Per-sample normalised 1-D kernels ``[B, kernel_size]``."""
        u = _rand(x, generator, 2)
        sigma = _uniform(u[:, 1], *self.sigma)
        radius = self.kernel_size // 2
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernels = torch.exp(-0.5 * (offsets / sigma.unsqueeze(1)) ** 2)
        kernels = kernels / kernels.sum(dim=1, keepdim=True)
        impulse = (offsets == 0).to(x.dtype).expand_as(kernels)
        return torch.where((u[:, 0] < self.p).unsqueeze(1), kernels, impulse)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, c, h, w = x.shape
        k = self.kernel_size
        weight = self.kernels(x, generator).repeat_interleave(c, dim=0)  # [B*C, k]: one kernel per channel
        r = k // 2
        out = F.pad(x.reshape(1, b * c, h, w), (r, r, r, r), mode="reflect")
        out = F.conv2d(out, weight.view(b * c, 1, 1, k), groups=b * c)
        out = F.conv2d(out, weight.view(b * c, 1, k, 1), groups=b * c)
        return out.view(b, c, h, w)


@dataclass(frozen=True)
class Solarize:
    """Invert pixels at or above ``threshold`` (torchvision's rule) in the selected samples."""

    p: float = 0.2
    threshold: float = 0.5

    def __post_init__(self) -> None:
        _check_probability(self.p)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        invert = _per_sample(_rand(x, generator) < self.p) & (x >= self.threshold)
        return torch.where(invert, 1.0 - x, x)


@dataclass(frozen=True)
class BatchAugment:
    """A pipeline of batched ops: uint8 ``[B, 3, S, S]`` -> ImageNet-normalised float32 ``[B, 3, S, S]``."""

    ops: tuple[Op, ...]
    image_size: int

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        size = self.image_size
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"expected uint8 images [B, 3, {size}, {size}], got {images.dtype} {tuple(images.shape)}")
        if generator.device.type != images.device.type:
            raise ValueError(f"generator is on {generator.device} but the images are on {images.device}")
        x = images.to(torch.float32).div_(255.0)
        for op in self.ops:
            x = op(x, generator)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
        # Normalised straight into channels_last, the layout the networks run in (bench.devices.place).
        out = torch.empty_like(x, memory_format=torch.channels_last)
        return torch.sub(x, mean, out=out).div_(std)


def blur_kernel_size(image_size: int) -> int:
    """About 10% of the image side, odd, at least 3 (23 at 224 px, as SimCLR and BYOL use)."""
    return max(3, int(0.1 * image_size) | 1)


def build_views(
    recipe: Sequence[Sequence[tuple[str, Mapping[str, Any]]]],
    image_size: int,
    *,
    crop_scale_min: float | None = None,
    color_jitter: float | None = None,
    rotate: bool = False,
) -> tuple[BatchAugment, BatchAugment]:
    """The two SSL views of a method's recipe: data the method declares (``methods.base.ViewRecipe``), two
    sequences of ``(op, parameters)`` applied in order.

    The recipes' "Resize" is not an op here: the decoded cache already holds images at ``image_size``.
    The keyword options change every recipe alike for images it was not made for (the run's ``views``
    section): ``crop_scale_min`` replaces a crop's lower scale, ``color_jitter`` multiplies the jitter
    amplitudes (0: none) and switches on jitter a recipe marks ``optional``, ``rotate`` turns each
    ``geometry`` slot into a rotation by any angle and a vertical flip. At their defaults the recipe is
    exactly the method's own.
    """
    if len(recipe) != 2:
        raise ValueError(f"a view recipe holds two views, got {len(recipe)}")
    options = _RecipeOptions(image_size, crop_scale_min, color_jitter, rotate)
    view1, view2 = (tuple(op for spec in view for op in options.ops(*spec)) for view in recipe)
    return BatchAugment(view1, image_size), BatchAugment(view2, image_size)


@dataclass(frozen=True)
class _RecipeOptions:
    """Turns one ``(op, parameters)`` entry of a recipe into the ops it stands for under the view options."""

    image_size: int
    crop_scale_min: float | None
    color_jitter: float | None
    rotate: bool

    def ops(self, name: str, params: Mapping[str, Any]) -> tuple[Op, ...]:
        blur = blur_kernel_size(self.image_size)
        sigma = blur_sigma(self.image_size)
        if name == "crop":
            return (RandomResizedCrop(scale=(self.crop_scale_min or params["scale_min"], 1.0)),)
        if name == "geometry":
            return (RandomRotation(), VerticalFlip(0.5)) if self.rotate else ()
        if name == "hflip":
            return (HorizontalFlip(params["p"]),)
        if name == "color_jitter":
            if params.get("optional", False) and self.color_jitter is None:
                return ()
            factor = 1.0 if self.color_jitter is None else self.color_jitter
            amplitudes = (factor * a for a in params["amplitudes"])
            return (ColorJitter(*amplitudes, p=params["p"]),) if factor > 0 else ()
        if name == "grayscale":
            return (RandomGrayscale(params["p"]),)
        if name == "blur":
            return (GaussianBlur(blur, p=params["p"], sigma=sigma),)
        if name == "solarize":
            return (Solarize(p=params["p"]),)
        raise ValueError(f"unknown view op {name!r}; valid: {', '.join(VIEW_OPS)}")


def blur_sigma(image_size: int) -> tuple[float, float]:
    """The recipes' sigma range (0.1-2.0 px) is defined at 224 px; below that it shrinks with the image,
    so a 64 px view is blurred as much, relative to its content, as a 224 px one (otherwise the blur
    would erase the fine texture the benchmark is about)."""
    scale = min(1.0, image_size / 224)
    return (0.1 * scale, 2.0 * scale)


def build_eval_transform(image_size: int) -> BatchAugment:
    """Deterministic: to float and normalise (images are already decoded at ``image_size``)."""
    return BatchAugment((), image_size)


def build_finetune_transform(image_size: int, *, augmix: bool = False) -> BatchAugment:
    """Supervised fine-tuning: a milder crop than SSL, plus both flips (lesions have no up or left); with
    ``augmix``, then AugMix at torchvision's defaults (the authors' ISIC recipe)."""
    ops: tuple[Op, ...] = (RandomResizedCrop(scale=(0.5, 1.0)), HorizontalFlip(0.5), VerticalFlip(0.5))
    return BatchAugment((*ops, AugMix()) if augmix else ops, image_size)
