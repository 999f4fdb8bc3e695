from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autoprune._registry import Registry

__all__ = ["CRITERIA", "ENTRY_POINT_GROUP", "Criterion", "GroupTensors", "get_criterion", "needs_gradients", "register_criterion"]

ENTRY_POINT_GROUP = "autoprune.criteria"  # installed packages add criteria here: name = "pkg.module:Class"


@dataclass(frozen=True)
class GroupTensors:
    """What a criterion sees of one group: row ``c`` of ``weights`` holds the raw weights of channel ``c``.

    With scope ``layer`` the rows are the root layer's own filters (``weight[c].flatten()``); with scope
    ``group`` they are the concatenation of every coupled layer's slice for that channel.

    ``grads`` has the layout of ``weights`` and holds the gradient of the loss averaged over a few batches;
    it is present only when the engine was given batches (criteria with ``needs_gradients``).
    ``bn_scale`` holds |gamma| of the BatchNorm that normalises each channel (scope ``layer``: the one fed
    directly by the root; ``group``: summed over every coupled BatchNorm), or None when there is none.
    ``seed`` is a stable number derived from the plan and the group name, for criteria that draw at random.
    """

    name: str
    weights: torch.Tensor  # [channels, features]
    grads: torch.Tensor | None = None  # [channels, features]
    bn_scale: torch.Tensor | None = None  # [channels]
    seed: int = 0

    @property
    def channels(self) -> int:
        return int(self.weights.shape[0])


class Criterion(ABC):
    """Scores channels; the lowest-scoring ones are removed.

    Set ``needs_gradients = True`` on a criterion that reads ``GroupTensors.grads``: the engine then runs a
    few batches through the model copy before scoring.
    """

    name: str = ""
    needs_gradients: bool = False

    @abstractmethod
    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        """Return a float tensor of shape ``[tensors.channels]``."""


def _check_criterion(name: str, obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, Criterion)):
        raise TypeError(f"expected a Criterion subclass, got {obj!r}")
    if not obj.name:
        obj.name = name


CRITERIA: Registry[type[Criterion]] = Registry(
    "criterion", entry_point_group=ENTRY_POINT_GROUP, check=_check_criterion
)


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


def needs_gradients(name: str) -> bool:
    """Whether the criterion ``name`` reads gradients (so a trial must provide batches)."""
    return bool(getattr(CRITERIA.get(name), "needs_gradients", False))
