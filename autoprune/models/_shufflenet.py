from __future__ import annotations

import torch
from torch import nn

__all__ = ["ShuffleNet", "ShuffleUnit", "channel_shuffle", "shufflenet_small"]


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNetV2's shuffle: view as (groups, channels/groups), transpose, flatten."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


def _branch(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False),
        nn.BatchNorm2d(cout),
        nn.Conv2d(cout, cout, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ShuffleUnit(nn.Module):
    """ShuffleNetV2's unit: split the channels in two (stride 1) or feed both branches (stride 2), concat, shuffle."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        if stride == 1:
            self.shortcut: nn.Module | None = None
            self.branch = _branch(cin // 2, half, 1)
        else:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
            self.branch = _branch(cin, half, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            left, right = x.chunk(2, dim=1)
            out = torch.cat([left, self.branch(right)], dim=1)
        else:
            out = torch.cat([self.shortcut(x), self.branch(x)], dim=1)
        return channel_shuffle(out, 2)


class ShuffleNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(inplace=True))
        self.stage1 = nn.Sequential(ShuffleUnit(24, 48, 2), ShuffleUnit(48, 48, 1))
        self.stage2 = nn.Sequential(ShuffleUnit(48, 96, 2), ShuffleUnit(96, 96, 1))
        self.head_conv = nn.Sequential(nn.Conv2d(96, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.stage2(self.stage1(self.stem(x))))
        return self.classifier(torch.flatten(self.pool(x), 1))


def shufflenet_small(in_channels: int = 3, num_classes: int = 10) -> ShuffleNet:
    """Two ShuffleNetV2 stages (48, 96 channels): channel split, concatenation and channel shuffle."""
    return ShuffleNet(in_channels=in_channels, num_classes=num_classes)
