from __future__ import annotations

import torch
from torch import nn

__all__ = ["VGG", "vgg_bn"]


class VGG(nn.Module):
    """A plain conv + BN + ReLU chain with max-pools: each conv's filters couple only to the next conv's inputs."""

    def __init__(self, cfg: list[int | str], in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                width = int(item)
                layers += [nn.Conv2d(channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def vgg_bn(in_channels: int = 3, num_classes: int = 10) -> VGG:
    """Five conv + BN layers (32-64-128-128-128) with three max-pools and a linear classifier."""
    return VGG([32, "M", 64, "M", 128, 128, "M", 128], in_channels=in_channels, num_classes=num_classes)
