"""One trial: sample a plan, prune a copy, count, recalibrate, fine-tune, score."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import optuna

from autoprune.engine import PruneReport, check_sparsity_held, compressed_bytes
from autoprune.plan import PruningPlan
from autoprune.study._task import Task

__all__ = [
    "MAX_MACS_CONSTRAINT",
    "Objective",
    "PHASES",
    "PhaseHook",
    "PlanResult",
    "evaluate_plan",
    "failure_reason",
    "trial_seed",
]

PHASES = ("prune", "recalibrate", "finetune", "evaluate")
PhaseHook = Callable[[int, str], None]
MAX_MACS_CONSTRAINT = "max_macs"


def trial_seed(study_seed: int, number: int) -> int:
    """The seed trial ``number`` of a study seeded ``study_seed`` fine-tunes with; export and sweeps repeat it."""
    return study_seed * 100_003 + number


@dataclass(frozen=True)
class PlanResult:
    """What one plan scored: the metric after (and before) fine-tuning, its relative cost, the prune report."""

    plan: PruningPlan
    report: PruneReport
    metric: float  # after fine-tuning; the raw metric when the plan is infeasible (not fine-tuned)
    metric_before_finetune: float
    cost: float  # relative MACs, params or non-zero params, as config.objectives[1] says
    feasible: bool
    seconds: dict[str, float] = field(default_factory=dict)  # prune (graph + prune), count, recalibrate, ...
    compressed_bytes: int = 0  # gzip of the fine-tuned state_dict; measured only for plans with a sparsity


def evaluate_plan(
    task: Task, plan: PruningPlan, seed: int, on_phase: Callable[[str], None] = lambda _phase: None
) -> PlanResult:
    """A trial's recipe for one plan: prune a copy, count, and, when it meets ``constraints.max_macs``,
    recalibrate BatchNorm, fine-tune (seeded by ``seed``) and score. Uniform sweeps and trials share it."""
    cfg = task.config
    seconds: dict[str, float] = {}
    pruned, report = task.prune(plan)
    seconds["prune"] = report.seconds["graph"] + report.seconds["prune"] + report.seconds["sparsify"]
    seconds["count"] = report.seconds["count"]
    cost = report.cost(cfg.objectives[1])
    max_macs = cfg.constraints.max_macs
    if max_macs is not None and report.macs_ratio > max_macs:
        # Spend no fine-tune on a candidate the constraint rules out; record its raw metric only.
        on_phase("evaluate")
        started = time.perf_counter()
        metric = _finite(task.evaluator.score(pruned))
        seconds["evaluate"] = time.perf_counter() - started
        return PlanResult(plan, report, metric, metric, cost, False, seconds)

    on_phase("recalibrate")
    started = time.perf_counter()
    task.evaluator.recalibrate(pruned, cfg.finetune.bn_recalibration_batches, seed)
    seconds["recalibrate"] = time.perf_counter() - started
    started = time.perf_counter()
    metric_before = task.evaluator.score(pruned)
    seconds["evaluate"] = time.perf_counter() - started

    on_phase("finetune")
    started = time.perf_counter()
    task.evaluator.finetune(
        pruned,
        epochs=cfg.finetune.epochs,
        steps=cfg.finetune.steps,
        lr=cfg.finetune.lr,
        seed=seed,
    )
    seconds["finetune"] = time.perf_counter() - started

    on_phase("evaluate")
    started = time.perf_counter()
    metric = _finite(task.evaluator.score(pruned))
    seconds["evaluate"] += time.perf_counter() - started
    size = 0
    if plan.sparsity is not None:
        check_sparsity_held(pruned, report.sparsity, during="fine-tuning")
        size = compressed_bytes(pruned)
    return PlanResult(plan, report, metric, metric_before, cost, True, seconds, size)


class Objective:
    """``objective(trial) -> (metric, relative MACs or params)``; everything else goes to user attributes."""

    def __init__(self, task: Task, on_phase: PhaseHook | None = None) -> None:
        self.task = task
        self.on_phase = on_phase or (lambda _number, _phase: None)

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        try:
            return self._run(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            raise
        except Exception as exc:
            # Optuna marks the trial FAIL (the study's `catch`); the reason stays with it, beside its plan.
            trial.set_user_attr("error", failure_reason(exc))
            raise

    def _run(self, trial: optuna.Trial) -> tuple[float, float]:
        task, cfg = self.task, self.task.config
        self.on_phase(trial.number, "prune")
        plan = task.space.sample(trial)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("device", task.runtime.device)
        trial.set_user_attr("precision", task.runtime.precision)
        result = evaluate_plan(
            task,
            plan,
            seed=trial_seed(cfg.study.seed, trial.number),
            on_phase=lambda phase: self.on_phase(trial.number, phase),
        )
        report = result.report
        trial.set_user_attr("channels", {name: after for name, (_, after) in report.channels.items()})
        for key in ("macs", "params", "nonzero_params"):
            trial.set_user_attr(f"{key}", getattr(report, f"{key}_after"))
            trial.set_user_attr(f"{key}_relative", getattr(report, f"{key}_ratio"))
        if plan.sparsity is not None:
            trial.set_user_attr("sparsity", report.sparsity)
            if result.compressed_bytes:
                trial.set_user_attr("compressed_bytes", result.compressed_bytes)
                trial.set_user_attr("compressed_relative", result.compressed_bytes / task.base_compressed_bytes)
        if cfg.constraints.max_macs is not None:
            trial.set_constraint(MAX_MACS_CONSTRAINT, report.macs_ratio - cfg.constraints.max_macs)
        trial.set_user_attr("metric_before_finetune", result.metric_before_finetune)
        trial.set_user_attr("feasible", result.feasible)
        trial.set_user_attr("seconds", result.seconds)
        return result.metric, result.cost


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` on one line, short enough for a table cell and a warning line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def _finite(metric: float) -> float:
    if not math.isfinite(metric):
        raise FloatingPointError(f"the metric is {metric}; a non-finite metric cannot go on the front")
    return metric
