"""AugMix (Hendrycks et al., ICLR 2020) as one batched op whose chains are drawn per image.

Why not torchvision's ``v2.AugMix``: it draws from torch's global random generator, not the run's, and on a
batch it applies one chain of ops (the same ops and magnitudes) to every image, only the mixing weights
differing per image. The authors applied it image by image (PIL), so each image had chains of its own. Here
every chain's depth, ops, magnitudes and signs and the mixing weights are drawn per image from the caller's
generator, and each chain step is one batched call (``apply_ops``): on the CPU each op runs on the images
that drew it; on a GPU every op runs on the whole batch and each image keeps the one it drew, which needs no
host synchronisation. The five geometric ops share one resampling with a matrix per image.

What AugMix computes is torchvision's: the same op space (``all_ops``), magnitude bins, severity, chain depth
and Dirichlet/Beta mixing, and each op is torchvision's definition for float images (torchvision's own batched
kernels where an op has no per-image parameter); tests/test_augmix_cutmix.py replays a drawn plan image by
image with torchvision's functional ops.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

# The op space in torchvision's order: the geometric ops first (they share one resampling), then the rest;
# the last four only with ``all_ops`` (they overlap with the corruptions AugMix was tested on).
GEOMETRIC_OPS = ("shear_x", "shear_y", "translate_x", "translate_y", "rotate")
PARTIAL_OPS = (*GEOMETRIC_OPS, "posterize", "solarize", "autocontrast", "equalize")
ALL_OPS = (*PARTIAL_OPS, "brightness", "color", "contrast", "sharpness")
SIGNED_OPS = frozenset({*GEOMETRIC_OPS, "brightness", "color", "contrast", "sharpness"})
BINS = 10  # torchvision's magnitude bins: a level l of severity s is one of bins 0..s-1
MAX_SEVERITY = BINS
MAX_DEPTH = 3  # a negative ``depth`` draws each chain's depth from 1..3

_OP_INDEX = {name: index for index, name in enumerate(ALL_OPS)}
# An op as a batched kernel: (images, op indices, magnitude bins, signs) -> images.
Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AugMixPlan:
    """Everything random about one AugMix call, per image (B images, W chains, D steps per chain).

    ``ops``, ``levels``: ``[W, D, B]`` op indices into ``ALL_OPS`` and magnitude bins; ``signs``: ``[W, D, B]``
    of +1/-1 (applied to signed ops only); ``depths``: ``[W, B]``, the steps each chain takes; ``original``:
    ``[B]``, the weight of the unchanged image; ``weights``: ``[B, W]``, the chains' weights (they sum to
    ``1 - original``)."""

    ops: torch.Tensor
    levels: torch.Tensor
    signs: torch.Tensor
    depths: torch.Tensor
    original: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class AugMix:
    """``mix = original * x + sum_k weights_k * chain_k(x)`` per image, ``chain_k`` a random sequence of
    ``depth`` ops (``depth`` < 0: 1-3 at random per chain). Defaults are torchvision's (the authors' recipe)."""

    severity: int = 3
    width: int = 3
    depth: int = -1
    alpha: float = 1.0
    all_ops: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.severity <= MAX_SEVERITY:
            raise ValueError(f"AugMix severity must be in [1, {MAX_SEVERITY}], got {self.severity}")
        if self.width < 1 or self.depth == 0 or not (math.isfinite(self.alpha) and self.alpha > 0):
            raise ValueError(f"AugMix needs width >= 1, depth != 0 and a finite alpha > 0; got {self}")

    @property
    def ops(self) -> tuple[str, ...]:
        return ALL_OPS if self.all_ops else PARTIAL_OPS

    def plan(self, x: torch.Tensor, generator: torch.Generator) -> AugMixPlan:
        """Draw every image's chains and weights from ``generator`` (on the images' device)."""
        batch, device = x.shape[0], x.device
        steps = self.depth if self.depth > 0 else MAX_DEPTH
        shape = (self.width, steps, batch)
        ops = torch.randint(0, len(self.ops), shape, generator=generator, device=device)
        levels = torch.randint(0, self.severity, shape, generator=generator, device=device)
        signs = torch.where(torch.rand(shape, generator=generator, device=device) <= 0.5, -1.0, 1.0)
        if self.depth > 0:
            depths = torch.full((self.width, batch), self.depth, device=device)
        else:
            depths = torch.randint(1, MAX_DEPTH + 1, (self.width, batch), generator=generator, device=device)
        original = dirichlet(torch.full((batch, 2), self.alpha, device=device), generator)
        chains = dirichlet(torch.full((batch, self.width), self.alpha, device=device), generator)
        return AugMixPlan(ops, levels, signs, depths, original[:, 0], chains * original[:, 1:])

    def apply(self, x: torch.Tensor, plan: AugMixPlan) -> torch.Tensor:
        """The mix of ``plan`` for float images ``[B, 3, H, W]`` in [0, 1]."""
        mixed = x * _per_image(plan.original)
        for chain in range(self.width):
            out = x
            for step in range(plan.ops.shape[1]):
                ops = torch.where(step < plan.depths[chain], plan.ops[chain, step], -1)  # -1: the chain has ended
                out = apply_ops(out, ops, plan.levels[chain, step], plan.signs[chain, step])
            mixed = mixed + _per_image(plan.weights[:, chain]) * out
        return mixed.clamp_(0.0, 1.0)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.apply(x, self.plan(x, generator))


def dirichlet(concentration: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Rows drawn from Dirichlet(``concentration``) with ``generator``: normalised Gamma draws.

    ``torch.distributions`` cannot take a generator; ``torch._standard_gamma`` (what it calls) can."""
    gamma = torch._standard_gamma(concentration, generator=generator)
    return gamma / gamma.sum(dim=-1, keepdim=True)


def magnitude(op: str, levels: torch.Tensor, signs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The op's parameter per image from its magnitude bin (torchvision's AugMix table): shear factor,
    translation in whole pixels, rotation in degrees, posterize bits, solarize threshold, or the blend
    factor of brightness, colour, contrast and sharpness."""
    fraction = levels.to(torch.float32) / (BINS - 1)
    sign = signs if op in SIGNED_OPS else 1.0
    if op in ("shear_x", "shear_y"):
        return 0.3 * fraction * sign
    if op in ("translate_x", "translate_y"):
        side = width if op == "translate_x" else height
        return torch.trunc(side / 3.0 * fraction * sign)  # torchvision's int(): towards zero
    if op == "rotate":
        return 30.0 * fraction * sign
    if op == "posterize":
        return torch.round(4.0 - 4.0 * fraction)
    if op == "solarize":
        return 1.0 - fraction
    if op in ("brightness", "color", "contrast", "sharpness"):
        return 1.0 + 0.9 * fraction * sign
    return torch.zeros_like(fraction)  # autocontrast, equalize: no parameter


def apply_ops(
    x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor, *, gather: bool | None = None
) -> torch.Tensor:
    """One chain step: image i gets op ``ALL_OPS[ops[i]]`` at bin ``levels[i]`` (sign ``signs[i]``); an op
    index of -1 leaves the image as it is (a chain that has ended).

    ``gather`` (default: on the CPU) runs each op on the images that drew it, so a step costs about one op
    over the batch; otherwise every op runs on the whole batch and each image keeps its own, which costs a
    dozen ops but needs no host synchronisation (the GPU's way). Both give the same images."""
    gather = x.device.type == "cpu" if gather is None else gather
    out = x.clone() if gather else x
    for names, kernel in _KERNELS:
        chosen = torch.zeros_like(ops, dtype=torch.bool)
        for name in names:
            chosen |= ops == _OP_INDEX[name]
        if not gather:
            out = torch.where(_per_image(chosen), kernel(x, ops, levels, signs), out)
            continue
        index = torch.nonzero(chosen).flatten()
        if len(index):
            out[index] = kernel(x[index], ops[index], levels[index], signs[index])
    return out


def _geometric(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return _warp(x, _inverse_affine(ops, levels, signs, *x.shape[-2:]))


def _blend_op(name: str, degenerate: Callable[[torch.Tensor], torch.Tensor]) -> Kernel:
    def kernel(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
        return blend(x, degenerate(x), magnitude(name, levels, signs, *x.shape[-2:]))

    return kernel


def _posterize(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    return posterize(x, magnitude("posterize", levels, signs, *x.shape[-2:]))


def _solarize(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """torchvision's rule: invert the pixels at or above the threshold."""
    threshold = _per_image(magnitude("solarize", levels, signs, *x.shape[-2:]))
    return torch.where(x >= threshold, 1.0 - x, x)


def _gray_mean(x: torch.Tensor) -> torch.Tensor:
    return TF.rgb_to_grayscale(x).mean(dim=(-3, -2, -1), keepdim=True)


def blend(x: torch.Tensor, degenerate: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_blend`` with a factor per image: ``factor * x + (1 - factor) * degenerate``, clamped."""
    f = _per_image(factor)
    return (x * f + degenerate * (1.0 - f)).clamp_(0.0, 1.0)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """torchvision's float posterize (``floor(x * 2**bits)``, clamped, over ``2**bits``) with bits per image."""
    levels = _per_image(torch.exp2(bits))
    return torch.minimum(torch.floor(x * levels), levels - 1.0) / levels


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """Stretch each channel of each image to [0, 1]; a constant channel is left as it is (torchvision's rule,
    with ``torch.where`` instead of a boolean index, which would synchronise a GPU with the host)."""
    low = x.amin(dim=(-2, -1), keepdim=True)
    high = x.amax(dim=(-2, -1), keepdim=True)
    flat = high == low
    scale = torch.where(flat, 1.0, 1.0 / torch.where(flat, 1.0, high - low))
    return ((x - torch.where(flat, 0.0, low)) * scale).clamp_(0.0, 1.0)


# Each entry: the ops a kernel stands for, and the kernel; the five geometric ops share one resampling.
_KERNELS: tuple[tuple[tuple[str, ...], Kernel], ...] = (
    (GEOMETRIC_OPS, _geometric),
    (("posterize",), _posterize),
    (("solarize",), _solarize),
    (("autocontrast",), lambda x, o, lv, sg: autocontrast(x)),
    (("equalize",), lambda x, o, lv, sg: TF.equalize(x)),
    (("brightness",), _blend_op("brightness", torch.zeros_like)),
    (("color",), _blend_op("color", TF.rgb_to_grayscale)),
    (("contrast",), _blend_op("contrast", _gray_mean)),
    (("sharpness",), _blend_op("sharpness", lambda x: TF.adjust_sharpness(x, 0.0))),
)


def _inverse_affine(
    ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor, height: int, width: int
) -> torch.Tensor:
    """Per image the ``[2, 3]`` matrix taking an output pixel to where it is read from, in pixel units about
    the image centre (torchvision's convention): its geometric op's, the identity for the others. Shears are
    about the top-left corner and rotations about the centre, counter-clockwise, as torchvision's AugMix does."""

    def chosen(op: str) -> torch.Tensor:
        return torch.where(ops == _OP_INDEX[op], magnitude(op, levels, signs, height, width), 0.0)

    shear_x, shear_y = chosen("shear_x"), chosen("shear_y")
    move_x, move_y = chosen("translate_x"), chosen("translate_y")
    angle = torch.deg2rad(chosen("rotate"))
    cos, sin = torch.cos(angle), torch.sin(angle)
    rows = (
        torch.stack([cos, shear_x - sin, shear_x * height / 2 - move_x], dim=-1),
        torch.stack([sin + shear_y, cos, shear_y * width / 2 - move_y], dim=-1),
    )
    return torch.stack(rows, dim=-2)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Bilinear resampling with one matrix per image; outside the image reads 0 (torchvision's default fill)."""
    batch, _, height, width = x.shape
    xs = torch.arange(width, device=x.device, dtype=x.dtype) - (width - 1) / 2
    ys = torch.arange(height, device=x.device, dtype=x.dtype) - (height - 1) / 2
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([grid_x, grid_y, torch.ones_like(grid_x)], dim=-1).view(1, height * width, 3)
    source = points @ theta.to(x.dtype).transpose(1, 2)  # [B, H*W, 2] in pixels about the centre
    scale = torch.tensor([width / 2, height / 2], device=x.device, dtype=x.dtype)
    grid = (source / scale).view(batch, height, width, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _per_image(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)
