"""The dependency-graph wrapper: the only place in autoprune that imports torch_pruning.

Everything outside speaks of *groups* (sets of coupled channels named by their root module), never of
torch-pruning's own Group/Dependency objects. ``_wrapper`` holds :class:`ModelGraph` (enumeration, scoring,
pruning), ``_trace`` the DepGraph tracing and MAC counting, ``_rows`` the weight rows a criterion scores and
``_names`` the glob matching of module names.
"""

from __future__ import annotations

from autoprune.engine._graph._names import check_ignore_globs, matching_modules
from autoprune.engine._graph._trace import count_macs_params
from autoprune.engine._graph._wrapper import Group, ModelGraph, find_output_layers

__all__ = [
    "Group",
    "ModelGraph",
    "check_ignore_globs",
    "count_macs_params",
    "find_output_layers",
    "matching_modules",
]
