from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["TEST_FRACTION", "DataBundle", "split_tensors"]

TEST_FRACTION = 0.2


@dataclass
class DataBundle:
    """Loaders for one task. Search scores on ``val``; only export touches ``test``."""

    train: Iterable[Any]
    val: Iterable[Any]
    test: Iterable[Any] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None


def split_tensors(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    order: torch.Tensor,
    *,
    batch_size: int,
    val_fraction: float,
    seed: int,
    num_classes: int,
) -> DataBundle:
    """Loaders over ``order``: its first 20% the fixed test split, ``val_fraction`` of the rest validation, the
    remainder training (shuffled by ``seed``)."""
    n = len(order)
    n_test = int(round(n * TEST_FRACTION))
    n_val = int(round((n - n_test) * val_fraction))
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]

    def loader(idx: torch.Tensor, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(TensorDataset(inputs[idx], targets[idx]), batch_size=batch_size, shuffle=shuffle, generator=generator)

    return DataBundle(
        train=loader(train_idx, True),
        val=loader(val_idx, False),
        test=loader(test_idx, False),
        num_classes=num_classes,
        input_shape=tuple(inputs.shape[1:]),
    )
