"""ResNet-18/34/50/101/152-like nets (the torchvision block counts, basic or bottleneck blocks, narrow widths):
the same coupling patterns as the real ones at a size a CPU benchmark can build, to measure how graph building
and pruning grow with depth."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models._resnet import BasicBlock

__all__ = ["DEPTHS", "Bottleneck", "DeepResNet", "resnet_depth"]

# depth -> (block type, blocks per stage), as in He et al. 2016 and torchvision.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), and a residual add."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != out:
            self.downsample = nn.Sequential(nn.Conv2d(in_planes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class DeepResNet(nn.Module):
    def __init__(self, depth: int, width: int = 16, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        if depth not in DEPTHS:
            raise ValueError(f"unknown ResNet depth {depth!r}; known: {', '.join(map(str, DEPTHS))}")
        kind, counts = DEPTHS[depth]
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        in_planes = width
        for index, count in enumerate(counts):
            planes = width * 2**index
            blocks: list[nn.Module] = []
            for b in range(count):
                stride = 2 if index > 0 and b == 0 else 1
                block = BasicBlock(in_planes, planes, stride) if kind == "basic" else Bottleneck(in_planes, planes, stride)
                blocks.append(block)
                in_planes = planes if kind == "basic" else planes * Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_depth(depth: int, width: int = 16, in_channels: int = 3, num_classes: int = 10) -> DeepResNet:
    """A ResNet-``depth``-like net (18, 34, 50, 101, 152) with ``width`` channels in its first stage."""
    return DeepResNet(depth, width=width, in_channels=in_channels, num_classes=num_classes)
