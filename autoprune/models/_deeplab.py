from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ASPP", "DeepLab", "deeplab_small"]


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, dilated 3x3 branches and an image-pooling branch,
    concatenated and projected back. The concat couples every branch's filters to the projection's inputs."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (2, 4)) -> None:
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn(cin, cout, 1)] + [_conv_bn(cin, cout, 3, dilation=r) for r in rates])
        # No BatchNorm after global pooling: a 1x1 map with batch 1 has no variance to normalise.
        self.image_pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1), nn.ReLU(inplace=True))
        self.project = _conv_bn(cout * (len(rates) + 2), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.interpolate(self.image_pool(x), size=x.shape[-2:], mode="nearest")
        return self.project(torch.cat([branch(x) for branch in self.branches] + [pooled], dim=1))


class DeepLab(nn.Module):
    """A DeepLabV3+-style segmenter: a strided backbone, ASPP, a decoder that concatenates upsampled ASPP output
    with low-level features, and a 1x1 output head ``cls_conv``; logits are upsampled to the input size."""

    def __init__(self, in_channels: int = 3, num_classes: int = 11, width: int = 32) -> None:
        super().__init__()
        self.stem = _conv_bn(in_channels, width // 2)
        self.layer1 = _conv_bn(width // 2, width, stride=2)  # 1/2: the low-level features
        self.layer2 = nn.Sequential(_conv_bn(width, width * 2, stride=2), _conv_bn(width * 2, width * 2))  # 1/4
        self.aspp = ASPP(width * 2, width * 2)
        self.low_level = _conv_bn(width, width // 2, 1)
        self.decoder = _conv_bn(width * 2 + width // 2, width * 2)
        self.cls_conv = nn.Conv2d(width * 2, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        low = self.layer1(self.stem(x))
        high = self.aspp(self.layer2(low))
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        out = self.cls_conv(self.decoder(torch.cat([high, self.low_level(low)], dim=1)))
        return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def deeplab_small(in_channels: int = 3, num_classes: int = 11) -> DeepLab:
    """A small DeepLabV3+ (width 32, ASPP rates 2 and 4): [N, num_classes, H, W] logits."""
    return DeepLab(in_channels=in_channels, num_classes=num_classes)
