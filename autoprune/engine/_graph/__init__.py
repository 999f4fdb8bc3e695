"""The dependency-graph wrapper: the only place in autoprune that imports torch_pruning.

Everything outside speaks of *groups* (sets of coupled channels named by their root module), never of
torch-pruning's own Group/Dependency objects. ``_wrapper`` holds :class:`ModelGraph` (enumeration and pruning),
which composes one collaborator per job: ``_traced`` (one model traced into DepGraph; the tracing itself and MAC
counting are in ``_trace``), ``_outputs`` (groups and layers that reach a model output), ``_shuffles`` (channel
shuffles), ``_sites`` (attention heads, pruned through their adapters) and ``_scores`` (the rows a criterion scores,
from ``_rows``). ``_group`` is the project's :class:`Group`; ``_names`` the glob matching of module names.
"""

from __future__ import annotations

from autoprune.engine._graph._group import Group
from autoprune.engine._graph._names import check_ignore_globs, matching_modules
from autoprune.engine._graph._trace import count_macs_params
from autoprune.engine._graph._wrapper import ModelGraph, find_output_layers

__all__ = [
    "Group",
    "ModelGraph",
    "check_ignore_globs",
    "count_macs_params",
    "find_output_layers",
    "matching_modules",
]
