"""One trial: sample a plan, prune a copy, count, recalibrate, fine-tune, score."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from autoprune.config import Config
from autoprune.engine import PruneReport, check_sparsity_held, compressed_bytes
from autoprune.evaluate import (
    Candidate,
    FirstBatches,
    LatencyMeter,
    LatencyResult,
    Reconstruction,
    fixed_batches,
    get_cost,
    reconstruct,
)
from autoprune.plan import PruningPlan
from autoprune.study._latency import StudyLatencyCache, latency_meter, process_latency_meter
from autoprune.study._resolve import factory_search_paths
from autoprune.study._task import Task

__all__ = [
    "MAX_LATENCY_CONSTRAINT",
    "MAX_MACS_CONSTRAINT",
    "FinetuneBudget",
    "Objective",
    "PHASES",
    "PhaseHook",
    "PlanResult",
    "ScreenRecipe",
    "evaluate_plan",
    "failure_reason",
    "trial_seed",
    "recorded_seed",
    "SEED_ATTR",
]

PHASES = ("prune", "reconstruct", "recalibrate", "finetune", "evaluate")
PhaseHook = Callable[[int, str], None]
MAX_MACS_CONSTRAINT = "max_macs"
MAX_LATENCY_CONSTRAINT = "max_latency"


SEED_ATTR = "seed"  # trial user attribute: the seed it recalibrated and fine-tuned with; export repeats it


def trial_seed(study_seed: int, number: int) -> int:
    """The seed trial ``number`` of a study seeded ``study_seed`` fine-tunes with; export and sweeps repeat it."""
    return study_seed * 100_003 + number


def recorded_seed(user_attrs: Mapping[str, Any], study_seed: int, number: int) -> int:
    """The seed a trial ran with: the one it records (a budgeted search seeds by slot, the same in every
    worker), else ``trial_seed`` of its number (older studies)."""
    seed = user_attrs.get(SEED_ATTR)
    return int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else trial_seed(study_seed, number)


@dataclass(frozen=True)
class FinetuneBudget:
    """The length of a candidate's fine-tune, as ``evaluator.finetune`` takes it: ``steps`` optimizer steps when
    set, else ``epochs`` passes. Zero epochs and no steps: no fine-tune, the recalibrated model is scored once."""

    epochs: int
    steps: int | None = None

    @classmethod
    def of(cls, config: Config) -> FinetuneBudget:
        return cls(config.finetune.epochs, config.finetune.steps)

    @classmethod
    def recorded(cls, user_attrs: Mapping[str, Any], config: Config) -> FinetuneBudget:
        """The fine-tune a trial recorded (a staged finalist's is its rung's); the config's for older trials."""
        entry = user_attrs.get("finetune")
        if not isinstance(entry, dict):
            return cls.of(config)
        return cls(int(entry.get("epochs") or 0), None if entry.get("steps") is None else int(entry["steps"]))

    @property
    def none(self) -> bool:
        return self.steps is None and self.epochs <= 0

    def to_dict(self) -> dict[str, int | None]:
        return {"epochs": self.epochs, "steps": self.steps}


@dataclass(frozen=True)
class ScreenRecipe:
    """How a screen (a staged or budgeted search's cheap first look) differs from a fine-tuned candidate: its own
    number of BatchNorm recalibration batches and the batches it is scored on (None: a candidate's)."""

    recalibration_batches: int | None = None
    loader: Any = None

    @classmethod
    def of(cls, task: Task) -> ScreenRecipe:
        screen = task.config.study.stages.screen
        val = getattr(task.evaluator, "validation", task.data.val)
        if screen.val_batches is None or _fewer(val, screen.val_batches):
            return cls(screen.recalibration_batches, None)  # scored as candidates are (their subset is as short)
        return cls(screen.recalibration_batches, FirstBatches(task.data.val, screen.val_batches))


def _fewer(loader: Any, count: int) -> bool:
    try:
        return len(loader) <= count
    except TypeError:
        return False


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
    latency: LatencyResult | None = None  # when the run measures latency (objective or constraints.max_latency)
    timed_latency: LatencyResult | None = None  # latency.mode both: the fine-tuned candidate, timed
    reconstruction: Reconstruction | None = None  # finetune.reconstruct: each refitted layer's output error


def evaluate_plan(
    task: Task,
    plan: PruningPlan,
    seed: int,
    on_phase: Callable[[str], None] = lambda _phase: None,
    finetune: FinetuneBudget | None = None,
    latency: LatencyMeter | None = None,
    screen: ScreenRecipe | None = None,
) -> PlanResult:
    """A trial's recipe for one plan: prune a copy, count, and, when it meets ``constraints.max_macs``,
    recalibrate BatchNorm, fine-tune (seeded by ``seed``; ``finetune``, else the config's length) and score.
    Uniform sweeps and trials share it. A run that measures latency measures (or predicts) it after pruning, with
    ``latency`` (else a meter of this process, kept on the task); a candidate over ``constraints.max_latency`` is
    not fine-tuned either. With ``latency.mode: both`` a fine-tuned candidate is timed as well."""
    cfg = task.config
    budget = finetune if finetune is not None else FinetuneBudget.of(cfg)
    seconds: dict[str, float] = {}
    pruned, report = task.prune(plan)
    seconds["prune"] = report.seconds["graph"] + report.seconds["prune"] + report.seconds["sparsify"]
    seconds["count"] = report.seconds["count"]
    candidate = Candidate(pruned, report, latency if latency is not None else process_latency_meter(task))
    cost = get_cost(cfg.objectives[1], search_paths=factory_search_paths(cfg))(candidate).relative
    measured = candidate.latency() if candidate.meter is not None else None
    if measured is not None:
        seconds["latency"] = measured.seconds  # 0 when the architecture was measured before
    if _over_budget(cfg, report, measured):
        # Spend no fine-tune on a candidate the constraint rules out; record its raw metric only.
        on_phase("evaluate")
        started = time.perf_counter()
        metric = _finite(task.evaluator.score(pruned))
        seconds["evaluate"] = time.perf_counter() - started
        return PlanResult(plan, report, metric, metric, cost, False, seconds, latency=measured)
    fitted = _reconstruct(task, pruned, report, seed, seconds, on_phase)
    metric_before, metric = _recover(task, pruned, seed, budget, screen, seconds, on_phase)
    size = 0
    if plan.sparsity is not None:
        check_sparsity_held(pruned, report.sparsity, during="fine-tuning")
        size = compressed_bytes(pruned)
    timed = None
    if measured is not None and cfg.latency.mode == "both" and not budget.none:
        timed = candidate.timed_latency()  # the search read the prediction; the fine-tuned candidate is timed too
        seconds["latency"] += timed.seconds
    return PlanResult(plan, report, metric, metric_before, cost, True, seconds, size, measured, timed, fitted)


def calibration_batches(task: Task, count: int) -> list[Any]:
    """The first ``count`` training batches in order, on the task's device: reconstruction's calibration set."""
    return [task.runtime.to_device(b) for b in fixed_batches(task.data.train, count)]


def _reconstruct(
    task: Task, pruned: Any, report: PruneReport, seed: int, seconds: dict[str, float], on_phase: Callable[[str], None]
) -> Reconstruction | None:
    """``finetune.reconstruct``: refit the layers that lost input channels to the base model's outputs."""
    section = task.config.finetune.reconstruct
    if section is None:
        return None
    on_phase("reconstruct")
    started = time.perf_counter()
    fitted = reconstruct(
        pruned, task.base.model, calibration_batches(task, section.batches), kept=report.kept, ridge=section.ridge,
        positions=section.positions, seed=seed,
    )  # fmt: skip
    seconds["reconstruct"] = time.perf_counter() - started
    return fitted


def _recover(
    task: Task,
    pruned: Any,
    seed: int,
    budget: FinetuneBudget,
    screen: ScreenRecipe | None,
    seconds: dict[str, float],
    on_phase: Callable[[str], None],
) -> tuple[float, float]:
    """Recalibrate, score, fine-tune (unless the budget has none) and score again: (metric before, after)."""
    cfg = task.config
    on_phase("recalibrate")
    started = time.perf_counter()
    # A screen (no fine-tune) may recalibrate on fewer batches and be scored on fewer (ScreenRecipe).
    recipe = screen if screen is not None and budget.none else ScreenRecipe()
    recalibration = cfg.finetune.bn_recalibration_batches
    if recipe.recalibration_batches is not None:
        recalibration = recipe.recalibration_batches
    task.evaluator.recalibrate(pruned, recalibration, seed)
    seconds["recalibrate"] = time.perf_counter() - started
    started = time.perf_counter()
    metric_before = task.evaluator.score(pruned) if recipe.loader is None else task.evaluator.score(pruned, recipe.loader)
    seconds["evaluate"] = time.perf_counter() - started
    if budget.none:
        # No fine-tune (a screened candidate of a staged search): the recalibrated score is the score.
        seconds["finetune"] = 0.0
        return metric_before, _finite(metric_before)
    on_phase("finetune")
    started = time.perf_counter()
    task.evaluator.finetune(pruned, epochs=budget.epochs, steps=budget.steps, lr=cfg.finetune.lr, seed=seed)
    seconds["finetune"] = time.perf_counter() - started
    on_phase("evaluate")
    started = time.perf_counter()
    metric = _finite(task.evaluator.score(pruned))
    seconds["evaluate"] += time.perf_counter() - started
    return metric_before, metric


def _over_budget(cfg: Config, report: PruneReport, latency: LatencyResult | None) -> bool:
    """Whether a candidate breaks ``constraints.max_macs`` or ``constraints.max_latency``."""
    max_macs, max_latency = cfg.constraints.max_macs, cfg.constraints.max_latency
    if max_macs is not None and report.macs_ratio > max_macs:
        return True
    return max_latency is not None and latency is not None and latency.relative > max_latency


class Objective:
    """``objective(trial) -> (metric, relative MACs or params)``; everything else goes to user attributes."""

    def __init__(
        self,
        task: Task,
        on_phase: PhaseHook | None = None,
        finetune: FinetuneBudget | None = None,
        screen: ScreenRecipe | None = None,
    ) -> None:
        self.task = task
        self.screen = screen
        self.on_phase = on_phase or (lambda _number, _phase: None)
        self.finetune = finetune if finetune is not None else FinetuneBudget.of(task.config)
        self._meters: dict[str, LatencyMeter | None] = {}  # by study: its latency cache lives in its storage

    def latency_meter(self, study: optuna.Study) -> LatencyMeter | None:
        """The meter for ``study``'s trials, caching measurements in the study (None without latency)."""
        if study.study_name not in self._meters:
            self._meters[study.study_name] = latency_meter(self.task, StudyLatencyCache(study))
        return self._meters[study.study_name]

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
        seed = recorded_seed(trial.user_attrs, cfg.study.seed, trial.number)
        trial.set_user_attr(SEED_ATTR, seed)
        trial.set_user_attr("plan", plan.to_dict())
        trial.set_user_attr("device", task.runtime.device)
        trial.set_user_attr("precision", task.runtime.precision)
        result = evaluate_plan(
            task,
            plan,
            seed=seed,
            on_phase=lambda phase: self.on_phase(trial.number, phase),
            finetune=self.finetune,
            latency=self.latency_meter(trial.study),
            screen=self.screen,
        )
        trial.set_user_attr("finetune", self.finetune.to_dict())  # export repeats exactly this fine-tune
        report = result.report
        trial.set_user_attr("channels", {name: after for name, (_, after) in report.channels.items()})
        for key in ("macs", "params", "nonzero_params"):
            trial.set_user_attr(f"{key}", getattr(report, f"{key}_after"))
            trial.set_user_attr(f"{key}_relative", getattr(report, f"{key}_ratio"))
        if plan.sparsity is not None:
            trial.set_user_attr("sparsity", report.sparsity)
            if result.compressed_bytes:
                trial.set_user_attr("compressed_bytes", result.compressed_bytes)
                trial.set_user_attr("compressed_relative", result.compressed_bytes / task.base.compressed_bytes)
        if cfg.constraints.max_macs is not None:
            trial.set_constraint(MAX_MACS_CONSTRAINT, report.macs_ratio - cfg.constraints.max_macs)
        if result.latency is not None:
            for key, value in result.latency.attrs().items():
                trial.set_user_attr(key, value)
            if cfg.constraints.max_latency is not None:
                trial.set_constraint(MAX_LATENCY_CONSTRAINT, result.latency.relative - cfg.constraints.max_latency)
        if result.timed_latency is not None:
            for key, value in result.timed_latency.timed_attrs().items():
                trial.set_user_attr(key, value)
        trial.set_user_attr("metric_before_finetune", result.metric_before_finetune)
        trial.set_user_attr("feasible", result.feasible)
        trial.set_user_attr("seconds", result.seconds)
        if result.reconstruction is not None:
            fits = result.reconstruction.layers
            trial.set_user_attr("reconstruct", {
                "batches": result.reconstruction.batches,
                "refitted": sum(f.refitted for f in fits),
                "kept": [f.name for f in fits if not f.refitted],
            })  # fmt: skip
        return result.metric, result.cost


def failure_reason(exc: BaseException) -> str:
    """``Type: message`` on one line, short enough for a table cell and a warning line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def _finite(metric: float) -> float:
    if not math.isfinite(metric):
        raise FloatingPointError(f"the metric is {metric}; a non-finite metric cannot go on the front")
    return metric
