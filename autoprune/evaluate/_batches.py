from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader, SequentialSampler

from autoprune.evaluate._runtime import Runtime

__all__ = ["FirstBatches", "OnDevice", "fixed_batches"]


def _in_order(loader: Iterable[Any]) -> Iterable[Any]:
    """``loader`` read in dataset order: a shuffling DataLoader is rebuilt without shuffling (same batch size,
    collate function and workers); anything else as it is."""
    if isinstance(loader, DataLoader) and loader.batch_size is not None and not isinstance(loader.sampler, SequentialSampler):
        return DataLoader(
            loader.dataset,
            batch_size=loader.batch_size,
            shuffle=False,
            collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory,
            drop_last=loader.drop_last,
        )
    return loader


def fixed_batches(loader: Iterable[Any], count: int) -> list[Any]:
    """The first ``count`` batches of ``loader`` in dataset order, the same every call.

    A shuffling DataLoader would give other batches on each pass (and so other gradient scores for the same
    plan); it is read in order instead. Any other iterable gives its first ``count`` batches.
    """
    if count <= 0:
        return []
    return list(itertools.islice(_in_order(loader), count))


class FirstBatches:
    """The first ``count`` batches of ``loader`` in dataset order, read afresh on every pass (nothing cached):
    a fixed validation subset, the same for every trial."""

    def __init__(self, loader: Iterable[Any], count: int) -> None:
        if count < 1:
            raise ValueError(f"count must be at least 1, found {count}")
        self.loader = loader
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(_in_order(self.loader)), self.count)

    def __len__(self) -> int:
        return min(self.count, len(self.loader))  # type: ignore[arg-type]


class OnDevice:
    """``loader``'s batches moved to ``runtime``'s device (tensors inside tuples, lists and dicts)."""

    def __init__(self, loader: Iterable[Any], runtime: Runtime) -> None:
        self.loader = loader
        self.runtime = runtime

    def __iter__(self) -> Iterator[Any]:
        return (self.runtime.to_device(batch) for batch in self.loader)

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]
