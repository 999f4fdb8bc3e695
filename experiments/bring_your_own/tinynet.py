"""A model and data of your own, as `autoprune` finds them: ``model.factory: "tinynet:build"``.

Run from this folder (or anywhere: the config file's folder is on the import path for factories):

    autoprune validate config.yaml
    autoprune search config.yaml
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyNet(nn.Module):
    def __init__(self, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
        )
        self.head = nn.Linear(2 * width, num_classes)  # the output layer: autoprune never prunes it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def build(width: int = 16, num_classes: int = 10) -> nn.Module:
    """The model factory: keyword arguments come from ``model.options``."""
    return TinyNet(width, num_classes)


def loaders(batch_size: int = 64, seed: int = 0) -> tuple[DataLoader, DataLoader, DataLoader]:
    """The data factory: ``(train, val, test)`` loaders; keyword arguments come from ``data.options``."""
    digits = load_digits()  # ships with scikit-learn: nothing is downloaded
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    test, val, train = order[:360], order[360:720], order[720:]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)  # autoprune reseeds it before every pass
        return DataLoader(TensorDataset(x[idx], y[idx]), batch_size=batch_size, shuffle=shuffle, generator=generator)

    return loader(train, True), loader(val, False), loader(test, False)
