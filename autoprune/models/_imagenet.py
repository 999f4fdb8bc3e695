"""ImageNet-sized stand-ins for latency work, torchvision-free: ResNet-18's and MobileNetV2's layer shapes at
3x224x224, and ViT-Ti/16 at half depth. Random weights are enough to time them; they train like any other."""

from __future__ import annotations

import torch
from torch import nn

from autoprune.models._mobilenet import InvertedResidual, _conv_bn
from autoprune.models._resnet import BasicBlock
from autoprune.models._vit import ViT

__all__ = ["mobilenet_v2_like", "resnet18_like", "vit_ti16"]


class ResNet18Like(nn.Module):
    """torchvision's resnet18 layout: a 7x7 stride-2 stem and max-pool, then [2, 2, 2, 2] basic blocks, 64-512."""

    def __init__(self, in_channels: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, planes = [], 64
        for index, width in enumerate((64, 128, 256, 512)):
            stride = 1 if index == 0 else 2
            stages.append(nn.Sequential(BasicBlock(planes, width, stride), BasicBlock(width, width)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class MobileNetV2Like(nn.Module):
    """MobileNetV2's layout (width 1.0): a 32-channel stride-2 stem, 17 inverted residuals, a 1280-channel head."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, in_channels: int = 3, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, 32, 3, 2)
        blocks: list[nn.Module] = []
        channels = 32
        for expand, out, repeat, stride in self.SETTINGS:
            for index in range(repeat):
                blocks.append(InvertedResidual(channels, out, stride if index == 0 else 1, expand))
                channels = out
        self.blocks = nn.Sequential(*blocks)
        self.head_conv = _conv_bn(channels, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head_conv(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


def resnet18_like(in_channels: int = 3, num_classes: int = 1000) -> ResNet18Like:
    return ResNet18Like(in_channels=in_channels, num_classes=num_classes)


def mobilenet_v2_like(in_channels: int = 3, num_classes: int = 1000) -> MobileNetV2Like:
    return MobileNetV2Like(in_channels=in_channels, num_classes=num_classes)


def vit_ti16(in_channels: int = 3, num_classes: int = 1000, image_size: int = 224) -> ViT:
    """ViT-Ti/16's width (192, 3 heads, MLP 768) on 16x16 patches, 6 blocks instead of 12."""
    return ViT(
        image_size=image_size, patch_size=16, in_channels=in_channels, num_classes=num_classes, dim=192, depth=6, num_heads=3, mlp_ratio=4
    )
