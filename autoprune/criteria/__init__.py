"""Importance criteria: registered callable classes, ``criterion(tensors) -> score per channel``.

A lower score means "prune first". Add one with::

    @register_criterion("my_norm")
    class MyNorm(Criterion):
        def __call__(self, tensors): return tensors.weights.abs().max(dim=1).values

or, from an installed package, with an entry point in the group ``autoprune.criteria``
(``my_norm = "my_pkg.criteria:MyNorm"``); entry points are loaded the first time a name is not found.
"""

from __future__ import annotations

from autoprune.criteria import _builtin  # noqa: F401  (registers l1, l2, fpgm, taylor, lamp, bn_scale, random)
from autoprune.criteria._base import (
    CRITERIA,
    Criterion,
    GroupTensors,
    get_criterion,
    needs_gradients,
    register_criterion,
)

__all__ = [
    "CRITERIA",
    "Criterion",
    "GroupTensors",
    "available_criteria",
    "get_criterion",
    "needs_gradients",
    "register_criterion",
]


def available_criteria() -> list[str]:
    return CRITERIA.names()
