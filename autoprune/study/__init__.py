"""The Optuna study: storage, sampler, warm start, the trial objective, workers, and the study as tables."""

from __future__ import annotations

from autoprune.study._base import base_source
from autoprune.study._budget import (
    BudgetedSchedule,
    Compute,
    Schedule,
    UnitCosts,
    budgeted_schedule,
    plan_schedule,
    recipe_costs,
    staged_schedule,
    unit_costs,
)
from autoprune.study._budget_report import (
    BudgetSummary,
    budget_summaries,
    budget_winner,
    fidelity_warning,
    kendall_tau,
    spearman_rho,
)
from autoprune.study._budgeted import SLOT_ATTR, budget_of, budgeted_plan, run_budgeted
from autoprune.study._devices import check_worker_devices, worker_device
from autoprune.study._dispatch import search
from autoprune.study._fit import FittedSearch, fit_search
from autoprune.study._frame import (
    FIDELITY_ATTR,
    FRONT_COLUMNS,
    SCREEN,
    base_point,
    front_trials,
    is_final,
    pareto_frame,
    pareto_optimal,
    trials_frame,
)
from autoprune.study._heartbeat import JournalHeartbeatStorage, fail_stale
from autoprune.study._inputs import describe_inputs, first_channels
from autoprune.study._latency_table import TABLE_FOLDER, TableLog, cached_table, describe_table, latency_table
from autoprune.study._loop import FINISHED, run_trials
from autoprune.study._objective import (
    FinetuneBudget,
    Objective,
    PlanResult,
    calibration_batches,
    evaluate_plan,
    recorded_seed,
    trial_seed,
)
from autoprune.study._resolve import check_registered_names, factory_search_paths
from autoprune.study._search import SearchAborted, SearchInterrupted, enqueue_warm_start, metric_names
from autoprune.study._staged import run_staged, staged_spend
from autoprune.study._storage import (
    StorageLost,
    create_or_load_study,
    guard_storage,
    make_sampler,
    open_storage,
    open_study,
    worker_seed,
)
from autoprune.study._task import (
    Resolved,
    Task,
    TrainedBase,
    atomic_write_bytes,
    check_output_writable,
    fit_budgets,
    prepare_task,
    resolve,
)
from autoprune.study._workers import threads_per_worker

__all__ = [
    "TABLE_FOLDER",
    "TableLog",
    "cached_table",
    "describe_table",
    "latency_table",
    "FRONT_COLUMNS",
    "FINISHED",
    "JournalHeartbeatStorage",
    "Objective",
    "Resolved",
    "SearchAborted",
    "SearchInterrupted",
    "StorageLost",
    "PlanResult",
    "Task",
    "TrainedBase",
    "check_worker_devices",
    "worker_device",
    "atomic_write_bytes",
    "base_point",
    "base_source",
    "fit_budgets",
    "fit_search",
    "FittedSearch",
    "check_output_writable",
    "check_registered_names",
    "create_or_load_study",
    "describe_inputs",
    "factory_search_paths",
    "first_channels",
    "enqueue_warm_start",
    "fail_stale",
    "guard_storage",
    "calibration_batches",
    "evaluate_plan",
    "make_sampler",
    "metric_names",
    "open_storage",
    "open_study",
    "pareto_frame",
    "prepare_task",
    "resolve",
    "run_trials",
    "search",
    "threads_per_worker",
    "trial_seed",
    "recorded_seed",
    "trials_frame",
    "worker_seed",
    # the staged search
    "FIDELITY_ATTR",
    "SCREEN",
    "Compute",
    "FinetuneBudget",
    "Schedule",
    "UnitCosts",
    "front_trials",
    "pareto_optimal",
    "is_final",
    "plan_schedule",
    "run_staged",
    "staged_schedule",
    "staged_spend",
    "unit_costs",
    # the budgeted search
    "SLOT_ATTR",
    "BudgetedSchedule",
    "budget_of",
    "budgeted_plan",
    "budgeted_schedule",
    "recipe_costs",
    "run_budgeted",
    "BudgetSummary",
    "budget_summaries",
    "budget_winner",
    "fidelity_warning",
    "kendall_tau",
    "spearman_rho",
]
