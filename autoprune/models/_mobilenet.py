from __future__ import annotations

import torch
from torch import nn

__all__ = ["InvertedResidual", "MobileNet", "mobilenet_small"]


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise, 1x1 linear project, residual add when shapes match.

    The depthwise conv ties its input and output channels one to one, so the expansion group spans all three.
    """

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_residual = stride == 1 and cin == cout
        self.expand = _conv_bn(cin, hidden, 1)
        self.depthwise = _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_residual else out


class MobileNet(nn.Module):
    def __init__(self, in_channels: int = 3, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 16, 3)
        # (out channels, stride, expansion) per block
        settings = [(16, 1, 1), (24, 2, 4), (24, 1, 4), (32, 2, 4), (32, 1, 4)]
        blocks: list[nn.Module] = []
        channels = 16
        for cout, stride, expand in settings:
            blocks.append(InvertedResidual(channels, cout, stride, expand))
            channels = cout
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = _conv_bn(channels, 128, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def mobilenet_small(in_channels: int = 3, num_classes: int = 10) -> MobileNet:
    """A five-block MobileNetV2: inverted residuals with depthwise convs (16-24-32 channels)."""
    return MobileNet(in_channels=in_channels, num_classes=num_classes)
