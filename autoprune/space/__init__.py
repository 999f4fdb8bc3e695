"""The search space: from a trial to a :class:`~autoprune.plan.PruningPlan`, and the search-space presets."""

from __future__ import annotations

from autoprune.space._budgeted import (
    BASES,
    BASIS_PARAM,
    BUDGET_PARAM,
    baseline_criteria,
    baseline_name,
    baseline_params,
    baselines_by_priority,
    positional_importances,
)
from autoprune.space._config_list import config_list_bounds, parse_config_list, plan_to_config_list
from autoprune.space._optimizers import ALLOCATION_OPTIMIZERS, AllocationOptimizer
from autoprune.space._presets import available_presets, load_space_spec, preset_dirs
from autoprune.space._schedules import RATIO_SCHEDULES, RatioSchedule, get_ratio_schedule, register_ratio_schedule
from autoprune.space._space import SCOPE_PARAM, UNIFORM_BASELINES, SearchSpace
from autoprune.space._sparsity import SparsitySpace
from autoprune.space._tie import TIE_CHOICES, apply_tie, tie_summary, tied_knob

__all__ = [
    "ALLOCATION_OPTIMIZERS",
    "AllocationOptimizer",
    "BASES",
    "BASIS_PARAM",
    "BUDGET_PARAM",
    "RATIO_SCHEDULES",
    "RatioSchedule",
    "get_ratio_schedule",
    "register_ratio_schedule",
    "baseline_criteria",
    "baseline_name",
    "baseline_params",
    "baselines_by_priority",
    "positional_importances",
    "SCOPE_PARAM",
    "TIE_CHOICES",
    "UNIFORM_BASELINES",
    "SearchSpace",
    "SparsitySpace",
    "apply_tie",
    "available_presets",
    "config_list_bounds",
    "load_space_spec",
    "parse_config_list",
    "plan_to_config_list",
    "preset_dirs",
    "tie_summary",
    "tied_knob",
]
