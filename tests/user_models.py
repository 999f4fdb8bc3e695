"""Models a user might bring, for the robustness tests: importable as ``user_models:<name>``."""

from __future__ import annotations

import torch
from torch import nn


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 32, 3, padding=1, stride=2)
        self.bn2 = nn.BatchNorm2d(32)
        self.fc = nn.Linear(32, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return x.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


class FragileNet(SmallNet):
    """Breaks on some pruned shapes: its forward refuses fewer than 12 channels after conv1.

    Half the channels (the dry run that finds unsupported groups) still pass, so the group stays searchable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv1.out_channels < 12:
            raise RuntimeError(f"FragileNet needs at least 12 channels, got {self.conv1.out_channels}")
        return super().forward(x)


class NaNNet(SmallNet):
    """Trains into NaN once conv2 is pruned below 12 channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if self.conv2.out_channels < 12 and self.training:
            out = out * float("nan")
        return out


class AlwaysBroken(SmallNet):
    """Every pruned copy fails to train (an evaluation forward, as in the dry run, still works)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and (self.conv1.out_channels < 32 or self.conv2.out_channels < 32):
            raise ValueError("this model cannot run pruned")
        return super().forward(x)


def small_net() -> nn.Module:
    return SmallNet()


def fragile_net() -> nn.Module:
    return FragileNet()


def nan_net() -> nn.Module:
    return NaNNet()


def always_broken() -> nn.Module:
    return AlwaysBroken()


def not_a_module() -> str:
    return "a string, not a model"
