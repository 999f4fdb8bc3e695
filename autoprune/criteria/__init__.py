"""Importance criteria: registered callable classes, ``criterion(tensors) -> score per channel``.

A lower score means "prune first". Add one with::

    @register_criterion("my_norm")
    class MyNorm(Criterion):
        def __call__(self, tensors): return tensors.weights.abs().max(dim=1).values
"""

from __future__ import annotations

from autoprune.criteria._base import CRITERIA, Criterion, GroupTensors, get_criterion, register_criterion
from autoprune.criteria import _builtin  # noqa: F401  (registers l1, l2, fpgm)

__all__ = ["CRITERIA", "Criterion", "GroupTensors", "available_criteria", "get_criterion", "register_criterion"]


def available_criteria() -> list[str]:
    return CRITERIA.names()
