"""autoprune: find how much to prune each layer, and how, with an Optuna search over DepGraph plans."""

from __future__ import annotations

from autoprune._version import __version__
from autoprune.config import Config, load_config
from autoprune.criteria import Criterion, GroupTensors, available_criteria, register_criterion
from autoprune.engine import Group, PruneReport, apply_plan, count_macs_params, find_groups
from autoprune.errors import AutopruneError, ConfigError, PruningError
from autoprune.export import ExportError, Selection, export_model, load
from autoprune.plan import PruningPlan
from autoprune.study import search

__all__ = [
    "AutopruneError",
    "Config",
    "ConfigError",
    "Criterion",
    "ExportError",
    "Group",
    "GroupTensors",
    "PruneReport",
    "PruningError",
    "PruningPlan",
    "Selection",
    "__version__",
    "apply_plan",
    "available_criteria",
    "count_macs_params",
    "export_model",
    "find_groups",
    "load",
    "load_config",
    "register_criterion",
    "search",
]
