"""The Optuna study: storage, sampler, warm start, the trial objective, and the study as tables."""

from __future__ import annotations

from autoprune.study._frame import base_point, pareto_frame, trials_frame
from autoprune.study._objective import PHASES, Objective
from autoprune.study._search import (
    SearchAborted,
    SearchInterrupted,
    enqueue_warm_start,
    metric_names,
    search,
    write_outputs,
)
from autoprune.study._storage import make_sampler, open_study
from autoprune.study._task import Resolved, Task, atomic_write_bytes, check_output_writable, prepare_task, resolve

__all__ = [
    "PHASES",
    "Objective",
    "Resolved",
    "SearchAborted",
    "SearchInterrupted",
    "Task",
    "atomic_write_bytes",
    "base_point",
    "check_output_writable",
    "enqueue_warm_start",
    "make_sampler",
    "metric_names",
    "open_study",
    "pareto_frame",
    "prepare_task",
    "resolve",
    "search",
    "trials_frame",
    "write_outputs",
]
