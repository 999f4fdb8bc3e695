from __future__ import annotations

import torch
from torch import nn

__all__ = ["BasicBlock", "ResNet", "resnet_small"]


class BasicBlock(nn.Module):
    """The ResNet basic block: two 3x3 convs and a residual add, so channels couple across blocks."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(
        self, blocks: list[int], widths: list[int], in_channels: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages: list[nn.Module] = []
        in_planes = widths[0]
        for index, (count, width) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if index == 0 else 2
            layers = []
            for b in range(count):
                layers.append(BasicBlock(in_planes, width, stride if b == 0 else 1))
                in_planes = width
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages[0], stages[1], stages[2]
        self.extra_stages = nn.ModuleList(stages[3:])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        for stage in self.extra_stages:
            x = stage(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def resnet_small(in_channels: int = 3, num_classes: int = 10) -> ResNet:
    """Three stages of two basic blocks (32/64/128 channels): residual adds couple each stage."""
    return ResNet([2, 2, 2], [32, 64, 128], in_channels=in_channels, num_classes=num_classes)
