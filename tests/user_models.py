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


class TrainBroken(SmallNet):
    """Evaluates, but every training step fails (a forward that breaks in training mode)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("TrainBroken cannot train")
        return super().forward(x)


def train_broken() -> nn.Module:
    return TrainBroken()


def raising_factory() -> nn.Module:
    raise RuntimeError("the factory is broken")


def wide_net(width: int = 32) -> nn.Module:
    """SmallNet with ``width`` channels: a factory that takes ``model.options``."""
    net = SmallNet()
    net.conv1, net.bn1 = nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width)
    net.conv2, net.bn2 = nn.Conv2d(width, 32, 3, padding=1, stride=2), nn.BatchNorm2d(32)
    return net


def zero_net() -> nn.Module:
    """SmallNet whose classifier outputs zeros: it always predicts class 0 (chance level on balanced labels)."""
    net = SmallNet()
    nn.init.zeros_(net.fc.weight)
    nn.init.zeros_(net.fc.bias)
    return net


# Data factories: random 1x16x16 samples, labels 0..9 in turn (balanced), batches of 16.


def _tensors(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed)), torch.arange(n) % 10


def tiny_data(n_train: int = 64, n_val: int = 32, channels: int = 1, num_classes: int | None = None):
    from torch.utils.data import DataLoader, TensorDataset

    from autoprune.data import DataBundle

    x, y = _tensors(n_train, 0)
    train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=n_train > 0, generator=torch.Generator().manual_seed(0))
    x, y = _tensors(n_val, 1)
    val = DataLoader(TensorDataset(x.repeat(1, channels, 1, 1), y), batch_size=16)
    if num_classes is not None:
        return DataBundle(train=train, val=val, num_classes=num_classes)
    return train, val


def raising_data():
    raise OSError("the data folder is not mounted")


def not_loaders():
    return 42


# Metrics that break in the ways user metrics do.


def raising_metric(model, loader) -> float:
    raise KeyError("logits")


def text_metric(model, loader) -> str:
    return "high"


def nan_metric(model, loader) -> float:
    return float("nan")
