"""autoprune: find how much to prune each layer, and how, with an Optuna search over DepGraph plans.

The names below are imported on first use, so that ``import autoprune.config`` (a typed config, no torch model
code) does not load the engine, the evaluator and Optuna.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from autoprune._version import __version__

if TYPE_CHECKING:
    from autoprune.config import Config, load_config
    from autoprune.criteria import Criterion, GroupTensors, available_criteria, register_criterion
    from autoprune.engine import Group, PruneReport, apply_plan, count_macs_params, find_groups
    from autoprune.errors import AutopruneError, ConfigError, PruningError, ReconstructionError
    from autoprune.evaluate import Reconstruction, reconstruct
    from autoprune.export import ExportError, Selection, export_model, load
    from autoprune.plan import PruningPlan
    from autoprune.study import search

# Public name -> the subpackage that defines it.
_HOMES = {
    "Config": "config",
    "load_config": "config",
    "Criterion": "criteria",
    "GroupTensors": "criteria",
    "available_criteria": "criteria",
    "register_criterion": "criteria",
    "Group": "engine",
    "PruneReport": "engine",
    "apply_plan": "engine",
    "count_macs_params": "engine",
    "find_groups": "engine",
    "AutopruneError": "errors",
    "ConfigError": "errors",
    "PruningError": "errors",
    "ReconstructionError": "errors",
    "Reconstruction": "evaluate",
    "reconstruct": "evaluate",
    "ExportError": "export",
    "Selection": "export",
    "export_model": "export",
    "load": "export",
    "PruningPlan": "plan",
    "search": "study",
}

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
    "Reconstruction",
    "ReconstructionError",
    "Selection",
    "__version__",
    "apply_plan",
    "available_criteria",
    "count_macs_params",
    "export_model",
    "find_groups",
    "load",
    "load_config",
    "reconstruct",
    "register_criterion",
    "search",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'autoprune' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"autoprune.{home}"), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
