"""Export: pick a trial off the front, recover it by fine-tuning, write verified, deployable artifacts."""

from __future__ import annotations

from autoprune.export._artifacts import ARTIFACTS, ArtifactContext, ExportError, write_artifacts
from autoprune.export._export import EXPORT_FILE, ExportResult, check_out_dir, config_hash, export_model
from autoprune.export._load import load, load_example_inputs, shape_plan
from autoprune.export._measure import latency_before_after
from autoprune.export._recover import SCHEDULES, Recovered, prune_gradually, recover, step_fractions, step_plan
from autoprune.export._select import (
    SELECTION_RULES,
    Candidates,
    Selection,
    chord_heights,
    is_exportable,
    pareto_optimal,
    select_trial,
    why_not_exportable,
)

__all__ = [
    "ARTIFACTS",
    "EXPORT_FILE",
    "SCHEDULES",
    "SELECTION_RULES",
    "ArtifactContext",
    "Candidates",
    "ExportError",
    "ExportResult",
    "Recovered",
    "Selection",
    "check_out_dir",
    "chord_heights",
    "config_hash",
    "export_model",
    "is_exportable",
    "latency_before_after",
    "load",
    "load_example_inputs",
    "pareto_optimal",
    "prune_gradually",
    "recover",
    "select_trial",
    "shape_plan",
    "step_fractions",
    "step_plan",
    "why_not_exportable",
    "write_artifacts",
]
