"""Recovering and scoring a pruned candidate: BN recalibration, fine-tuning, the task metric."""

from __future__ import annotations

from autoprune.evaluate._batches import FirstBatches, fixed_batches
from autoprune.evaluate._costs import (
    COSTS,
    Candidate,
    Cost,
    LatencyCache,
    LatencyMeter,
    LatencyResult,
    MemoryCache,
    cost_label,
    get_cost,
    needs_latency,
    needs_latency_table,
    register_cost,
)
from autoprune.evaluate._evaluator import EVALUATOR_METHODS, Evaluator, check_evaluator
from autoprune.evaluate._factory import build_evaluator, load_user_evaluator
from autoprune.evaluate._latency import (
    LATENCY_BACKENDS,
    LatencyRun,
    Measurement,
    get_latency_backend,
    hardware_name,
    measure_latency,
    register_latency_backend,
)
from autoprune.evaluate._latency_table import (
    MAX_AUTO_NOISE,
    LatencyTable,
    TableEntry,
    grid_counts,
    identity_key,
    profile_latency,
    snap_up,
    table_identity,
)
from autoprune.evaluate._lightning import LightningEvaluator, lightning_evaluator  # lightning: imported on use
from autoprune.evaluate._losses import LOSSES, Distill, register_loss, resolve_loss
from autoprune.evaluate._reconstruct import LayerFit, Reconstruction, reconstruct
from autoprune.evaluate._runtime import CPU, Runtime, resolve_runtime
from autoprune.evaluate._train import recalibrate_bn, reseed, train

__all__ = [
    "COSTS",
    "CPU",
    "LATENCY_BACKENDS",
    "Candidate",
    "Cost",
    "cost_label",
    "get_cost",
    "LatencyCache",
    "LatencyMeter",
    "LatencyResult",
    "LatencyRun",
    "Measurement",
    "MemoryCache",
    "get_latency_backend",
    "hardware_name",
    "measure_latency",
    "needs_latency",
    "needs_latency_table",
    "LatencyTable",
    "MAX_AUTO_NOISE",
    "TableEntry",
    "grid_counts",
    "identity_key",
    "profile_latency",
    "snap_up",
    "table_identity",
    "register_cost",
    "register_latency_backend",
    "EVALUATOR_METHODS",
    "LOSSES",
    "Distill",
    "FirstBatches",
    "Evaluator",
    "LightningEvaluator",
    "Runtime",
    "build_evaluator",
    "check_evaluator",
    "fixed_batches",
    "lightning_evaluator",
    "load_user_evaluator",
    "recalibrate_bn",
    "reconstruct",
    "LayerFit",
    "Reconstruction",
    "register_loss",
    "reseed",
    "resolve_loss",
    "resolve_runtime",
    "train",
]
