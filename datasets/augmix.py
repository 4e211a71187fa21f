"""AugMix (Hendrycks et al., ICLR 2020) as one batched op whose chains are drawn per image.

Why not torchvision's ``v2.AugMix``: it draws from torch's global random generator, not the run's, and on a
batch it applies one chain of ops (the same ops and magnitudes) to every image, only the mixing weights
differing per image. The authors applied it image by image (PIL), so each image had chains of its own. Here
every chain's depth, ops, magnitudes and signs and the mixing weights are drawn per image from the caller's
generator, and each chain step is evaluated for the whole batch at once: every op of the space runs on the
batch (the five geometric ones as one resampling with a matrix per image) and each image keeps the result of
the op it drew. That costs a dozen cheap batched ops per step instead of a Python loop over images, and
needs no gather and no host synchronisation, so it runs on the GPU as it does on the CPU.

What AugMix computes is torchvision's: the same op space (``all_ops``), magnitude bins, severity, chain depth
and Dirichlet/Beta mixing, and each op is torchvision's definition for float images (torchvision's own batched
kernels where an op has no per-image parameter); tests/test_augmix_cutmix.py replays a drawn plan image by
image with torchvision's functional ops.
"""

from __future__ import annotations

import math
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
                stepped = apply_ops(out, plan.ops[chain, step], plan.levels[chain, step], plan.signs[chain, step])
                out = torch.where(_per_image(step < plan.depths[chain]), stepped, out)
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


def apply_ops(x: torch.Tensor, ops: torch.Tensor, levels: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    """One chain step: image i gets op ``ALL_OPS[ops[i]]`` at bin ``levels[i]`` (sign ``signs[i]``)."""
    height, width = x.shape[-2:]
    params = {op: magnitude(op, levels, signs, height, width) for op in ALL_OPS}
    theta = _inverse_affine(ops, params, height, width)
    geometric = ops < len(GEOMETRIC_OPS)
    out = torch.where(_per_image(geometric), _warp(x, theta), x)
    gray = TF.rgb_to_grayscale(x)
    results = {
        "posterize": lambda: posterize(x, params["posterize"]),
        "solarize": lambda: torch.where(x >= _per_image(params["solarize"]), 1.0 - x, x),
        "autocontrast": lambda: autocontrast(x),
        "equalize": lambda: TF.equalize(x),
        "brightness": lambda: blend(x, torch.zeros_like(gray), params["brightness"]),
        "color": lambda: blend(x, gray, params["color"]),
        "contrast": lambda: blend(x, gray.mean(dim=(-3, -2, -1), keepdim=True), params["contrast"]),
        "sharpness": lambda: blend(x, TF.adjust_sharpness(x, 0.0), params["sharpness"]),
    }
    for op, result in results.items():
        out = torch.where(_per_image(ops == _OP_INDEX[op]), result(), out)
    return out


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


def _inverse_affine(ops: torch.Tensor, params: dict[str, torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Per image the ``[2, 3]`` matrix taking an output pixel to where it is read from, in pixel units about
    the image centre (torchvision's convention): its geometric op's, the identity for the others. Shears are
    about the top-left corner and rotations about the centre, counter-clockwise, as torchvision's AugMix does."""

    def chosen(op: str) -> torch.Tensor:
        return torch.where(ops == _OP_INDEX[op], params[op], 0.0)

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
