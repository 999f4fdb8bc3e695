"""A plain conv chain with an uneven width profile, in named stages: where per-layer allocation matters."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNEVEN_STAGES", "UnevenVGG", "vgg_uneven"]

# Per stage, the output width of each 3x3 conv + BN + ReLU; a 2x2 max-pool follows every stage. Wide layers sit
# between narrow ones, as in MobileNetV2's inverted bottlenecks: a uniform ratio starves the narrow layers
# (cheap to keep) long before the wide ones (where most MACs are), so plans of equal MACs differ.
UNEVEN_STAGES: tuple[tuple[int, ...], ...] = ((16, 64), (16, 128), (128, 32))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UnevenVGG(nn.Module):
    def __init__(
        self, stages: tuple[tuple[int, ...], ...] = UNEVEN_STAGES, in_channels: int = 3, num_classes: int = 10
    ) -> None:
        super().__init__()
        channels = in_channels
        built: list[nn.Module] = []
        for widths in stages:
            layers: list[nn.Module] = []
            for width in widths:
                layers.append(_conv_bn(channels, width))
                channels = width
            layers.append(nn.MaxPool2d(2))
            built.append(nn.Sequential(*layers))
        # Named stages (stage1, stage2, ...), so that per-stage search spaces see the stages.
        for index, stage in enumerate(built, start=1):
            self.add_module(f"stage{index}", stage)
        self.num_stages = len(built)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, self.num_stages + 1):
            x = getattr(self, f"stage{index}")(x)
        return self.classifier(torch.flatten(self.pool(x), 1))


def vgg_uneven(in_channels: int = 3, num_classes: int = 10) -> UnevenVGG:
    """Six conv + BN layers in three stages, widths 16-64 / 16-128 / 128-32: narrow layers between wide ones."""
    return UnevenVGG(in_channels=in_channels, num_classes=num_classes)
