"""Structural pruning through DepGraph: enumerate groups, apply a plan to a copy, count MACs."""

from __future__ import annotations

from autoprune.engine._apply import (
    LossFn,
    PruneReport,
    accumulate_gradients,
    apply_plan,
    find_groups,
    group_seed,
    select_removed,
)
from autoprune.engine._check import UnsupportedGroup, UnsupportedGroupWarning, find_unsupported
from autoprune.engine._graph import Group, ModelGraph, check_ignore_globs, count_macs_params, matching_modules

__all__ = [
    "Group",
    "LossFn",
    "ModelGraph",
    "PruneReport",
    "UnsupportedGroup",
    "UnsupportedGroupWarning",
    "accumulate_gradients",
    "apply_plan",
    "check_ignore_globs",
    "count_macs_params",
    "find_groups",
    "find_unsupported",
    "group_seed",
    "matching_modules",
    "select_removed",
]
