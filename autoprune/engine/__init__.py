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
from autoprune.engine._check import UnsupportedGroup, UnsupportedGroupWarning, check_output_shapes, find_unsupported
from autoprune.engine._device import to_device, weights_device
from autoprune.engine._global import channel_importances, global_ranking_plan, importance_table, relative_macs
from autoprune.engine._graph import (
    Group,
    ModelGraph,
    check_ignore_globs,
    count_macs_params,
    find_output_layers,
    matching_modules,
)
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
    refresh_masked_weights,
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
    "UnsupportedGroup",
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
    "check_output_shapes",
    "count_macs_params",
    "find_groups",
    "find_output_layers",
    "find_unsupported",
    "global_ranking_plan",
    "group_seed",
    "importance_table",
    "layer_sparsity",
    "logits_of",
    "make_permanent",
    "matching_modules",
    "output_tensors",
    "refresh_masked_weights",
    "register_attention_adapter",
    "relative_macs",
    "select_removed",
    "sparsifiable_layers",
    "to_device",
    "weights_device",
]
