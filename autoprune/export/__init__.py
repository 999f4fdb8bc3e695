"""Export: pick a trial off the front, recover it by fine-tuning, write verified, deployable artifacts."""

from __future__ import annotations

from autoprune.export._artifacts import ARTIFACTS, ArtifactContext, ExportError, write_artifacts
from autoprune.export._export import ExportResult, export_model
from autoprune.export._load import load, load_example_inputs
from autoprune.export._recover import prune_gradually, step_fractions
from autoprune.export._select import SELECTION_RULES, Selection, chord_heights, select_trial

__all__ = [
    "ARTIFACTS",
    "SELECTION_RULES",
    "ArtifactContext",
    "ExportError",
    "ExportResult",
    "Selection",
    "chord_heights",
    "export_model",
    "load",
    "load_example_inputs",
    "prune_gradually",
    "select_trial",
    "step_fractions",
    "write_artifacts",
]
