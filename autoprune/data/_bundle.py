from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["DataBundle"]


@dataclass
class DataBundle:
    """Loaders for one task. Search scores on ``val``; only export touches ``test``."""

    train: Iterable[Any]
    val: Iterable[Any]
    test: Iterable[Any] | None = None
    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
