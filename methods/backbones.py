"""torchvision ResNets that expose the layer2/3/4 feature maps the hierarchical block needs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torchvision import models

Stem = Literal["imagenet", "small"]
BACKBONES: dict[str, tuple] = {
    "resnet18": (models.resnet18, (128, 256, 512)),
    "resnet50": (models.resnet50, (512, 1024, 2048)),
}
STEMS: tuple[str, ...] = ("imagenet", "small")


class Backbone(nn.Module):
    """A ResNet trunk. ``stages(x, upto=k)`` runs only as far as stage k (1 = layer2, 3 = layer4),
    which lets a method skip the deeper layers when its loss does not need them.

    ``stem="small"`` replaces the 7x7/2 convolution and max-pool with a 3x3/1 convolution, the usual
    change for 32-96 px inputs, so that layer4 still has a spatial extent worth pooling.
    """

    def __init__(self, name: str = "resnet18", stem: Stem = "imagenet", weights: Path | None = None) -> None:
        super().__init__()
        if name not in BACKBONES:
            raise ValueError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}")
        if stem not in STEMS:
            raise ValueError(f"unknown stem {stem!r}; valid stems: {', '.join(STEMS)}")
        factory, channels = BACKBONES[name]
        net = factory(weights=None)
        if weights is not None:
            net.load_state_dict(_read_state_dict(weights))
        if stem == "small":
            net.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
            net.maxpool = nn.Identity()
        self.name = name
        self.stage_channels: tuple[int, int, int] = channels
        self.out_dim = channels[-1]
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1)
        self.layer2, self.layer3, self.layer4 = net.layer2, net.layer3, net.layer4

    def stages(self, x: torch.Tensor, upto: int = 3) -> list[torch.Tensor]:
        """Feature maps of layer2..layer(upto+1), shallowest first."""
        maps = []
        x = self.stem(x)
        for layer in (self.layer2, self.layer3, self.layer4)[:upto]:
            x = layer(x)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled layer4 features: the representation every method is evaluated on."""
        return self.stages(x)[-1].mean(dim=(2, 3))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a local weights file (bench fetches named ImageNet weights into it beforehand); the classifier
    ``fc`` is kept so torchvision files load as-is."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)
