from __future__ import annotations

import torch
from torch import nn

__all__ = ["DenseLayer", "DenseNet", "densenet_small"]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 bottleneck, BN-ReLU-3x3, and the new features concatenated after the input."""

    def __init__(self, cin: int, growth: int, bottleneck: int = 2) -> None:
        super().__init__()
        inner = growth * bottleneck
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, inner, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, growth, 3, 1, 1, bias=False)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.norm1(x)))
        out = self.conv2(self.relu(self.norm2(out)))
        return torch.cat([x, out], dim=1)


class DenseNet(nn.Module):
    def __init__(
        self, layers: list[int], growth: int = 12, in_channels: int = 3, num_classes: int = 10, stem: int = 24
    ) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_channels, stem, 3, 1, 1, bias=False)
        stages: list[nn.Module] = []
        channels = stem
        for index, count in enumerate(layers):
            block: list[nn.Module] = []
            for _ in range(count):
                block.append(DenseLayer(channels, growth))
                channels += growth
            if index < len(layers) - 1:
                out = channels // 2
                block += [nn.BatchNorm2d(channels), nn.ReLU(), nn.Conv2d(channels, out, 1, bias=False), nn.AvgPool2d(2)]
                channels = out
            stages.append(nn.Sequential(*block))
        self.stages = nn.Sequential(*stages)
        self.norm = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.norm(self.stages(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def densenet_small(in_channels: int = 3, num_classes: int = 10) -> DenseNet:
    """Two dense blocks of three layers (growth 12) and a transition: concatenation couples every layer's output."""
    return DenseNet([3, 3], growth=12, in_channels=in_channels, num_classes=num_classes)
