"""One trial: sample a plan, prune a copy, count, recalibrate, fine-tune, score."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import optuna

from autoprune.engine import apply_plan
from autoprune.study._task import Task

__all__ = ["MAX_MACS_CONSTRAINT", "Objective", "PHASES", "PhaseHook", "failure_reason"]

PHASES = ("prune", "recalibrate", "finetune", "evaluate")
PhaseHook = Callable[[int, str], None]
MAX_MACS_CONSTRAINT = "max_macs"


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
        seconds: dict[str, float] = {}

        self.on_phase(trial.number, "prune")
        plan = task.space.sample(trial)
        trial.set_user_attr("plan", plan.to_dict())
        pruned, report = apply_plan(
            task.base_model,
            task.example_inputs,
            plan,
            base_counts=task.base_counts,
            gradient_batches=task.gradient_batches,
        )
        seconds["prune"] = report.seconds["graph"] + report.seconds["prune"]
        seconds["count"] = report.seconds["count"]
        trial.set_user_attr("channels", {name: after for name, (_, after) in report.channels.items()})
        for key in ("macs", "params"):
            trial.set_user_attr(f"{key}", getattr(report, f"{key}_after"))
            trial.set_user_attr(f"{key}_relative", getattr(report, f"{key}_ratio"))
        cost = report.macs_ratio if cfg.objectives[1] == "macs" else report.params_ratio

        max_macs = cfg.constraints.max_macs
        feasible = max_macs is None or report.macs_ratio <= max_macs
        if max_macs is not None:
            trial.set_constraint(MAX_MACS_CONSTRAINT, report.macs_ratio - max_macs)

        if not feasible:
            # Spend no fine-tune on a candidate the constraint rules out; record its raw metric only.
            self.on_phase(trial.number, "evaluate")
            started = time.perf_counter()
            metric = task.evaluator.score(pruned)
            seconds["evaluate"] = time.perf_counter() - started
            trial.set_user_attr("metric_before_finetune", metric)
            trial.set_user_attr("feasible", False)
            trial.set_user_attr("seconds", seconds)
            return _finite(metric), cost

        self.on_phase(trial.number, "recalibrate")
        started = time.perf_counter()
        task.evaluator.recalibrate(pruned, cfg.finetune.bn_recalibration_batches)
        seconds["recalibrate"] = time.perf_counter() - started
        started = time.perf_counter()
        metric_before = task.evaluator.score(pruned)
        seconds["evaluate"] = time.perf_counter() - started

        self.on_phase(trial.number, "finetune")
        started = time.perf_counter()
        task.evaluator.finetune(
            pruned,
            epochs=cfg.finetune.epochs,
            lr=cfg.finetune.lr,
            momentum=cfg.finetune.momentum,
            weight_decay=cfg.finetune.weight_decay,
            seed=cfg.study.seed * 100_003 + trial.number,
        )
        seconds["finetune"] = time.perf_counter() - started

        self.on_phase(trial.number, "evaluate")
        started = time.perf_counter()
        metric = task.evaluator.score(pruned)
        seconds["evaluate"] += time.perf_counter() - started

        trial.set_user_attr("metric_before_finetune", metric_before)
        trial.set_user_attr("feasible", True)
        trial.set_user_attr("seconds", seconds)
        return _finite(metric), cost


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` on one line, short enough for a table cell and a warning line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def _finite(metric: float) -> float:
    if not math.isfinite(metric):
        raise FloatingPointError(f"the metric is {metric}; a non-finite metric cannot go on the front")
    return metric
