from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch.utils.data import DataLoader

__all__ = ["fixed_batches"]


def fixed_batches(loader: Iterable[Any], count: int) -> list[Any]:
    """The first ``count`` batches of ``loader`` in dataset order, the same every call.

    A shuffling DataLoader would give other batches on each pass (and so other gradient scores for the same
    plan); it is read in order instead. Any other iterable gives its first ``count`` batches.
    """
    if count <= 0:
        return []
    if isinstance(loader, DataLoader) and loader.batch_size is not None:
        loader = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=False, collate_fn=loader.collate_fn)
    batches: list[Any] = []
    for batch in loader:
        if len(batches) >= count:
            break
        batches.append(batch)
    return batches
