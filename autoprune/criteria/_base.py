from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoprune._registry import Registry

__all__ = ["CRITERIA", "Criterion", "GroupTensors", "get_criterion", "register_criterion"]


@dataclass(frozen=True)
class GroupTensors:
    """What a criterion sees of one group: row ``c`` of ``weights`` holds the raw weights of channel ``c``.

    With scope ``layer`` the rows are the root layer's own filters (``weight[c].flatten()``); with scope
    ``group`` they are the concatenation of every coupled layer's slice for that channel.
    """

    name: str
    weights: torch.Tensor  # [channels, features]

    @property
    def channels(self) -> int:
        return int(self.weights.shape[0])


class Criterion(ABC):
    """Scores channels; the lowest-scoring ones are removed."""

    name: str = ""

    @abstractmethod
    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        """Return a float tensor of shape ``[tensors.channels]``."""


CRITERIA: Registry[type[Criterion]] = Registry("criterion")


def register_criterion(name: str) -> Callable[[type[Criterion]], type[Criterion]]:
    """Class decorator: make ``name`` usable in plans and configs."""

    def decorator(cls: type[Criterion]) -> type[Criterion]:
        if not (isinstance(cls, type) and issubclass(cls, Criterion)):
            raise TypeError(f"register_criterion({name!r}) expects a Criterion subclass, got {cls!r}")
        cls.name = name
        return CRITERIA.register(name)(cls)

    return decorator


def get_criterion(name: str) -> Criterion:
    return CRITERIA.get(name)()
