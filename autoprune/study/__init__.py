"""The Optuna study: storage, sampler, warm start, the trial objective, and the study as tables."""

from __future__ import annotations

from autoprune.study._frame import base_point, pareto_frame, trials_frame
from autoprune.study._objective import PHASES, Objective, PlanResult, evaluate_plan
from autoprune.study._search import enqueue_warm_start, metric_names, search, write_outputs
from autoprune.study._storage import make_sampler, open_study
from autoprune.study._task import Task, atomic_write_bytes, prepare_task

__all__ = [
    "PHASES",
    "Objective",
    "PlanResult",
    "Task",
    "atomic_write_bytes",
    "base_point",
    "enqueue_warm_start",
    "evaluate_plan",
    "make_sampler",
    "metric_names",
    "open_study",
    "pareto_frame",
    "prepare_task",
    "search",
    "trials_frame",
    "write_outputs",
]
