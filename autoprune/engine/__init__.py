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
from autoprune.engine._attention import ATTENTION_ADAPTERS, AttentionAdapter, Projection, register_attention_adapter
from autoprune.engine._check import UnsupportedGroupWarning
from autoprune.engine._device import to_device, weights_device
from autoprune.engine._global import channel_importances, global_ranking_plan, importance_table, relative_macs
from autoprune.engine._graph import Group, ModelGraph, check_ignore_globs, count_macs_params, find_output_layers
from autoprune.engine._io import LABELS, call_model, has_labels, logits_of, output_loss, output_tensors, without_labels
from autoprune.engine._sparsify import (
    SPARSIFIERS,
    Sparsifier,
    apply_sparsity,
    check_sparsity_held,
    compressed_bytes,
    count_nonzero_params,
    layer_sparsity,
    make_permanent,
    sparsifiable_layers,
)

__all__ = [
    "LABELS",
    "has_labels",
    "output_loss",
    "without_labels",
    "ATTENTION_ADAPTERS",
    "AttentionAdapter",
    "Group",
    "LossFn",
    "ModelGraph",
    "Projection",
    "PruneReport",
    "SPARSIFIERS",
    "Sparsifier",
    "UnsupportedGroupWarning",
    "accumulate_gradients",
    "apply_plan",
    "apply_sparsity",
    "call_model",
    "channel_importances",
    "check_sparsity_held",
    "compressed_bytes",
    "count_nonzero_params",
    "check_ignore_globs",
    "count_macs_params",
    "find_groups",
    "find_output_layers",
    "global_ranking_plan",
    "group_seed",
    "importance_table",
    "layer_sparsity",
    "logits_of",
    "make_permanent",
    "output_tensors",
    "register_attention_adapter",
    "relative_macs",
    "select_removed",
    "sparsifiable_layers",
    "to_device",
    "weights_device",
]
