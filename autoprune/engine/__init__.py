"""Structural pruning through DepGraph: enumerate groups, apply a plan to a copy, count MACs."""

from __future__ import annotations

from autoprune.engine._apply import PruneReport, apply_plan, find_groups, select_removed
from autoprune.engine._check import UnsupportedGroup, UnsupportedGroupWarning, find_unsupported
from autoprune.engine._graph import Group, ModelGraph, check_ignore_globs, count_macs_params, matching_modules

__all__ = [
    "Group",
    "ModelGraph",
    "PruneReport",
    "UnsupportedGroup",
    "UnsupportedGroupWarning",
    "apply_plan",
    "check_ignore_globs",
    "count_macs_params",
    "find_groups",
    "find_unsupported",
    "matching_modules",
    "select_removed",
]
