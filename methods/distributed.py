"""What the methods need to train on a global batch split across processes (torch.distributed).

The rule every helper here follows: each rank computes the *global-batch* objective (the same scalar
on every rank), and every collective's backward sums the gradient over ranks. Rank r's backward then
yields W times its share of dL/dθ, and DistributedDataParallel's averaging over the W ranks divides
that by W again, so the optimizer sees exactly the gradient of a single process on the global batch.
That sum-in-backward is the world-size correction: a gather whose backward keeps only the local slice
(lightly issue #1528) or a plain, non-autograd ``all_reduce`` of Barlow Twins' cross-correlation
(lightly issue #1977) leaves the gradient 1/W too small, silently.

Without a process group (or with a group of one) every helper is the identity, so single-process
training runs exactly the code and numerics it always did.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from methods.jigsaw import jigsaw, permute_tiles

# torch 2.14 deprecates torch.distributed.nn.functional.all_gather in favour of the private
# torch.distributed._functional_collectives; it still works (its gloo backward is an all-to-all and a
# sum), so silence exactly that warning rather than depend on a private module.
warnings.filterwarnings(
    "ignore", message=r"torch\.distributed\.nn\.functional\.all_gather is deprecated", category=FutureWarning
)


def world_size() -> int:
    """Processes in the default group; 1 when torch.distributed is not in use."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default group; 0 when torch.distributed is not in use."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _all_gather_rows(x: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's ``x`` along dim 0 (rank order); backward sums the gradient over ranks."""
    return torch.cat(dist_nn.all_gather(x), dim=0)


def gather(x: torch.Tensor) -> torch.Tensor:
    """The global batch of a per-rank batch ``x`` ([n, ...] on every rank -> [W*n, ...]), differentiable.

    Row order is rank 0's rows, then rank 1's, ..., which is the single-process batch when each rank
    holds the contiguous slice ``rank_rows`` of it. Gradients flow back to every rank's rows. Every
    rank must pass the same shape. The identity (the very same tensor) without a process group.
    """
    if world_size() == 1:
        return x
    return _all_gather_rows(x)


def rank_rows(local_rows: int) -> slice:
    """The rows of a global batch this rank holds when each of the W ranks holds ``local_rows``."""
    start = rank() * local_rows
    return slice(start, start + local_rows)


def sharded_jigsaw(
    images: torch.Tensor, n: int, *, generator: torch.Generator | None = None, per_sample: bool = True
) -> torch.Tensor:
    """``jigsaw`` of this rank's slice of the global batch, with the global batch's permutations.

    Every rank asks ``jigsaw`` for the tile orders of the whole global batch (on a tiny [W*b, 1, n, n]
    image of tile numbers, so the draw is exactly the one a single process with batch W*b makes, and
    the generator advances identically on every rank), keeps its own rows and moves its tiles by them.
    So a distributed run shuffles every image the way the single-process run does, as long as every
    rank passes a generator in the same state (the trainer's batch generator). With one process this
    is plain ``jigsaw``.
    """
    if world_size() == 1:
        return jigsaw(images, n, generator=generator, per_sample=per_sample)
    b = images.shape[0]
    tiles = torch.arange(n * n, device=images.device, dtype=torch.float32).view(1, 1, n, n)
    orders = jigsaw(tiles.expand(b * world_size(), 1, n, n), n, generator=generator, per_sample=per_sample)
    order = orders[rank_rows(b)].reshape(b, n * n).long()  # order[i, k]: source tile of slot k
    return permute_tiles(images, n, order)


class GlobalBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch (all ranks).

    Why not ``torch.nn.SyncBatchNorm``: it refuses CPU tensors (its kernels are GPU-only), and the
    harness trains and tests on CPU with gloo. One implementation for every device also means the
    gradient-parity test covers the code that runs on a GPU. Each rank all-gathers its count, mean and
    centred sum of squares (one collective of 2C+1 numbers) and combines them exactly (Chan et al.);
    autograd differentiates through the gather, whose backward sums over ranks, as ``SyncBatchNorm``'s
    hand-written backward does. In eval mode, or without a process group, it is ``BatchNorm`` itself.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(input)
        self._check_input_dim(input)
        x = input.to(torch.promote_types(input.dtype, torch.float32))  # half-precision sums would overflow
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        count = x.new_full((1,), x.numel() // channels)
        local_mean = x.mean(dim=dims)
        local_m2 = (x - local_mean.view(shape)).pow(2).sum(dim=dims)
        stats = _all_gather_rows(torch.cat([count, local_mean, local_m2]).unsqueeze(0))
        counts, means, m2s = stats[:, :1], stats[:, 1 : 1 + channels], stats[:, 1 + channels :]
        total = counts.sum()
        mean = (counts * means).sum(dim=0) / total
        var = (m2s + counts * (means - mean).pow(2)).sum(dim=0) / total
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), total.detach())
        out = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(input.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: torch.Tensor) -> None:
        """As ``BatchNorm`` does in training: count the batch, then move towards the batch mean and the
        unbiased batch variance (here of the global batch)."""
        self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * total / (total - 1).clamp(min=1)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm in ``module`` by ``GlobalBatchNorm``, in place, and return the result.

    The new layers hold the very same Parameter and buffer objects, so an optimizer built earlier
    still updates them and checkpoints keep their keys; call it before ``DistributedDataParallel``.
    """
    if isinstance(module, _BatchNorm) and not isinstance(module, GlobalBatchNorm):
        return _as_global(module)
    for name, child in module.named_children():
        converted = convert_sync_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


def _as_global(bn: _BatchNorm) -> GlobalBatchNorm:
    converted = GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, device="meta")
    for name, param in bn._parameters.items():
        converted._parameters[name] = param
    for name, buffer in bn._buffers.items():
        converted._buffers[name] = buffer
    converted.train(bn.training)
    return converted
