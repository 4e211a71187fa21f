"""The gradient-parity experiment, shared by the torchrun worker and the single-process reference.

A few optimizer steps of one method on a fixed global batch of B images, recording every step's loss,
every parameter's gradient (before the step) and the final state (parameters and BatchNorm buffers).
Run once in a plain process with all B images, and once per rank under torchrun with B/W images each
inside DistributedDataParallel: the records must agree. float64 throughout, so 1e-5 is far above
round-off and a missing factor (1/W) or a wrong statistic is far above 1e-5.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from methods import build_method
from methods.backbones import Backbone
from methods.base import SSLBatch, SSLMethod, run_training_steps, unwrap

GLOBAL_BATCH = 8
IMAGE_SIZE = 32  # with the ImageNet stem: layer2..4 maps of 4, 2 and 1 px, cheap even in float64
# Batches per method: two for BYOL (its EMA target has moved by the second), one for the others;
# FG-SSL's one batch is four steps, so DDP also runs past the bucket rebuild after its first iteration.
# The composites: Barlow Twins' step then FG-SSL's four on one backbone; byol+fgssl for two batches, so
# its target follows BYOL's step only, across batches. Rotation draws the global batch's rotations.
BATCHES = {
    "simclr": 1,
    "byol": 2,
    "barlow": 1,
    "fgssl": 1,
    "simsiam": 1,
    "rotation": 1,
    "barlow+fgssl": 1,
    "byol+fgssl": 2,
}
LR = 0.005  # moves the weights between steps without the chaotic updates that amplify round-off
SMALL: dict[str, dict[str, Any]] = {
    "simclr": {"proj_hidden_dim": 32, "proj_dim": 16},
    "byol": {"proj_hidden_dim": 32, "proj_dim": 16},
    "barlow": {"proj_dims": [32, 32]},
    "fgssl": {"grids": [4, 2, 1], "block_mid_channels": 16, "block_out_channels": 32, "embed_dim": 16},
    "simsiam": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 8},
    "rotation": {"head_hidden_dim": 16},
}
SMALL["barlow+fgssl"] = {"barlow": SMALL["barlow"], "fgssl": SMALL["fgssl"]}
SMALL["byol+fgssl"] = {"byol": SMALL["byol"], "fgssl": SMALL["fgssl"]}
METHOD_NAMES = tuple(SMALL)


def build(name: str) -> SSLMethod:
    """The method with the same initial weights in every process (seeded just before construction)."""
    torch.manual_seed(0)
    return build_method(name, Backbone("resnet18"), SMALL[name]).double().train()


def global_views(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of global batch ``index`` (what the trainer's augmenters would produce)."""
    g = torch.Generator().manual_seed(1000 + index)
    shape = (GLOBAL_BATCH, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def run(
    model: torch.nn.Module, rank: int = 0, world_size: int = 1, batches: int | None = None, full: bool = True
) -> dict[str, Any]:
    """Train ``model`` (a method, or DDP around one) for ``batches`` batches on this rank's rows.

    ``full=False`` records each gradient's and state tensor's ``digest`` instead of the tensor: enough
    to show that two ranks agree, without writing a ResNet's worth of float64 per step to disk.
    """
    method = unwrap(model)
    batches = BATCHES[method.name] if batches is None else batches
    optimizer = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=LR)
    local = GLOBAL_BATCH // world_size
    rows = slice(rank * local, (rank + 1) * local)
    keep = (lambda t: t.clone()) if full else digest
    losses: list[float] = []
    grads: list[dict[str, torch.Tensor | None]] = []
    for index in range(batches):
        view1, view2 = global_views(index)
        # The same generator state on every rank: FG-SSL draws the global batch's jigsaw orders from it.
        batch = SSLBatch(view1[rows], view2[rows], torch.Generator().manual_seed(2000 + index))
        for step in run_training_steps(model, batch):
            optimizer.zero_grad(set_to_none=True)
            step.loss.backward()
            losses.append(step.loss.item())
            grads.append({n: None if p.grad is None else keep(p.grad) for n, p in method.named_parameters()})
            optimizer.step()
            method.after_optimizer_step((index + 1) / batches)
    state = {k: keep(v.detach()) for k, v in method.state_dict().items()}
    return {"losses": losses, "grads": grads, "state": state}


def digest(tensor: torch.Tensor) -> tuple[float, float]:
    """Sum and sum of squares: equal for bitwise-equal tensors, and almost surely different otherwise."""
    t = tensor.double()
    return t.sum().item(), t.pow(2).sum().item()


def gather_without_correction(x: torch.Tensor) -> torch.Tensor:
    """The classic broken gather (lightly #1528): other ranks' rows arrive without a gradient path, so
    each rank's backward keeps only its own share and DDP's averaging leaves 1/W of the gradient.
    Used only to show that the parity test notices a missing world-size correction."""
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.detach().contiguous())
    parts[dist.get_rank()] = x
    return torch.cat(parts)
