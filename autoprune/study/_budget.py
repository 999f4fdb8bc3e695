"""A staged search's compute: what a screen and a fine-tune cost, counted in batches through the model (one
optimizer step or one forward batch is 1), and the schedule a budget buys (how many screens, how many finalists
per rung). A baseline given the same final fine-tune is costed with the same ``UnitCosts``, so arms compare at
equal compute."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from autoprune.config import Config, StagesConfig
from autoprune.errors import ConfigError
from autoprune.study._objective import FinetuneBudget
from autoprune.study._task import Task

__all__ = [
    "COMPUTE_ATTR",
    "BudgetSchedule",
    "BudgetedSchedule",
    "Compute",
    "Rung",
    "Schedule",
    "UnitCosts",
    "budget_schedule",
    "budgeted_schedule",
    "compute_record",
    "least_total",
    "plan_schedule",
    "recipe_costs",
    "search_compute",
    "staged_schedule",
    "unit_costs",
]


# Study user attribute: what a staged or budgeted search's compute buys (study.n_trials is its compute, in
# single-search trials), so the dashboard shows both figures.
COMPUTE_ATTR = "compute"


@dataclass(frozen=True)
class Compute:
    """Work done on candidates: optimizer steps and forward batches (recalibration and scoring)."""

    train_steps: int = 0
    forward_batches: int = 0

    @property
    def total(self) -> int:
        return self.train_steps + self.forward_batches

    def __add__(self, other: Compute) -> Compute:
        return Compute(self.train_steps + other.train_steps, self.forward_batches + other.forward_batches)

    def times(self, count: int) -> Compute:
        return Compute(self.train_steps * count, self.forward_batches * count)

    def to_dict(self) -> dict[str, int]:
        return {"train_steps": self.train_steps, "forward_batches": self.forward_batches}


@dataclass(frozen=True)
class UnitCosts:
    """What one candidate costs: ``recalibration`` and ``validation`` forward batches, ``finetune_steps`` steps
    of the configured fine-tune. A baseline given the same fine-tune costs ``finetune(steps)`` too."""

    recalibration: int
    validation: int
    finetune_steps: int
    screen_recalibration: int | None = None  # a screen's own batches (study.stages.screen); None: as above
    screen_validation: int | None = None
    # finetune.reconstruct: each calibration batch runs (part of) the model once per conv/linear layer refitted.
    reconstruction: int = 0

    def screen(self) -> Compute:
        recalibration = self.recalibration if self.screen_recalibration is None else self.screen_recalibration
        validation = self.validation if self.screen_validation is None else self.screen_validation
        return Compute(0, self.reconstruction + recalibration + validation)

    def finetune(self, steps: int) -> Compute:
        # scored before and after the fine-tune
        return Compute(steps, self.reconstruction + self.recalibration + 2 * self.validation)

    def standard(self) -> Compute:
        """One trial of a single search: recalibrate, score, fine-tune as configured, score."""
        return self.finetune(self.finetune_steps)


def _length(loader: Any, key: str, what: str) -> int:
    try:
        return len(loader)
    except TypeError:
        raise ConfigError(f"the staged search counts compute in batches, and {what} has no length", key=key) from None


def unit_costs(task: Task) -> UnitCosts:
    """The unit costs of ``task``'s recipe, from its config and its loaders' lengths."""
    validation = getattr(task.evaluator, "validation", task.data.val)  # the built-in's val_batches subset
    return recipe_costs(task.config, task.data.train, validation, task.base.model)


def recipe_costs(config: Config, train: Any, validation: Any, model: nn.Module) -> UnitCosts:
    """The unit costs of ``config``'s recipe on these loaders (``validation``: the batches a score reads) and
    this model (recalibration only when it has BatchNorm layers)."""
    ft = config.finetune
    batches = _length(train, "data", "the training loader")
    has_norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    steps = ft.steps if ft.steps is not None else ft.epochs * batches  # 0: candidates are not fine-tuned
    screen = config.study.stages.screen
    scored = _length(validation, "data", "the validation loader")
    screen_recalibration = None
    if screen.recalibration_batches is not None:
        screen_recalibration = min(screen.recalibration_batches, batches) if has_norms else 0
    return UnitCosts(
        recalibration=min(ft.bn_recalibration_batches, batches) if has_norms else 0,
        validation=scored,
        finetune_steps=steps,
        screen_recalibration=screen_recalibration,
        screen_validation=None if screen.val_batches is None else min(screen.val_batches, scored),
        reconstruction=_reconstruction_batches(config, batches, model),
    )


def _reconstruction_batches(config: Config, batches: int, model: nn.Module) -> int:
    """What ``finetune.reconstruct`` costs a candidate, in forward batches: its calibration batches, once for each
    conv/linear layer (an upper bound: only those that lost input channels are refitted, each on a partial
    forward of the pruned and the base model)."""
    section = config.finetune.reconstruct
    if section is None:
        return 0
    layers = sum(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)) for m in model.modules())
    return min(section.batches, batches) * max(layers - 1, 1)


@dataclass(frozen=True)
class Rung:
    finalists: int  # planned; fewer when fewer distinct plans qualify
    budget: FinetuneBudget  # rung 0: the configured fine-tune; rung r: factor**r times its steps
    steps: int


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _bought(n_trials: int | None) -> str:
    """Where a schedule's compute comes from, for its first line: study.n_trials's single-search trials."""
    if n_trials is None:
        return " (study.stages.budget)"
    return f" (study.n_trials {n_trials}: the compute of {_count(n_trials, 'single-search trial')})"


@dataclass(frozen=True)
class Schedule:
    budget: int
    screens: int
    rungs: tuple[Rung, ...]
    costs: UnitCosts
    n_trials: int | None = None  # the study.n_trials the budget was derived from; None: study.stages.budget

    @property
    def planned(self) -> Compute:
        return _planned(self.costs, self.screens, self.rungs)

    @property
    def trials(self) -> int:
        return self.screens + sum(r.finalists for r in self.rungs)

    def describe(self) -> str:
        rungs = ", then ".join(f"{r.finalists} x {r.steps} steps" for r in self.rungs)
        planned = self.planned.total
        finetunes = self.trials - self.screens
        return (
            f"staged search: budget {self.budget} batches{_bought(self.n_trials)} buys {self.trials} trials "
            f"({self.screens} screens, {_count(finetunes, 'fine-tune')}); screen {self.screens} plans "
            f"({self.costs.screen().total} each), fine-tune {rungs} ({planned} planned, {self.budget - planned} left over)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "screens": self.screens,
            "rungs": [{"finalists": r.finalists, "steps": r.steps} for r in self.rungs],
            "unit_costs": {"recalibration": self.costs.recalibration, "validation": self.costs.validation},
        }


def _planned(costs: UnitCosts, screens: int, rungs: tuple[Rung, ...]) -> Compute:
    """What ``screens`` screens and the finalists of ``rungs`` cost."""
    spent = costs.screen().times(screens)
    for rung in rungs:
        spent = spent + costs.finetune(rung.steps).times(rung.finalists)
    return spent


def _rung_counts(first: int, rungs: int, factor: int) -> list[int]:
    counts = [first]
    for _ in range(1, rungs):
        counts.append(math.ceil(counts[-1] / factor))
    return counts


def plan_schedule(budget: int, costs: UnitCosts, stages: StagesConfig, config: Config) -> Schedule:
    """The most finalists (rung 0) whose rungs fit in the finalists' share of ``budget``; every batch the
    finalists do not use goes to screening, so what is left over is less than one screen (unless the budget
    leaves fewer screens than finalists, which takes finalists away first)."""
    factor, count = stages.promote.factor, stages.promote.rungs
    steps = [costs.finetune_steps * factor**r for r in range(count)]
    budgets = [FinetuneBudget.of(config)] + [FinetuneBudget(0, s) for s in steps[1:]]

    def finalists_cost(first: int) -> int:
        return sum(n * costs.finetune(s).total for n, s in zip(_rung_counts(first, count, factor), steps, strict=True))

    screen = costs.screen().total
    smallest = finalists_cost(1) + screen
    if budget < smallest:
        key = "study.stages.budget" if stages.budget is not None else "study.n_trials"
        raise ConfigError(
            f"a staged search budget of {budget} batches cannot pay one screen ({screen}) and one finalist per rung "
            f"({finalists_cost(1)}); raise it to at least {smallest}",
            key=key,
        )
    share = math.floor(budget * (1.0 - stages.screen.share))
    first = 1
    while finalists_cost(first + 1) <= share:
        first += 1
    while first > 1 and (budget - finalists_cost(first)) // max(screen, 1) < first:
        first -= 1  # every finalist needs a screened plan of its own
    screens = (budget - finalists_cost(first)) // max(screen, 1)
    rungs = tuple(Rung(n, b, s) for n, b, s in zip(_rung_counts(first, count, factor), budgets, steps, strict=True))
    n_trials = None if stages.budget is not None else config.study.n_trials
    return Schedule(budget, int(screens), rungs, costs, n_trials)


def staged_schedule(task: Task) -> Schedule:
    """``task``'s schedule: ``study.stages.budget``, or ``study.n_trials`` standard trials."""
    stages = task.config.study.stages
    costs = unit_costs(task)
    if costs.finetune_steps == 0:
        raise ConfigError(
            "the staged search fine-tunes its finalists; set finetune.epochs or finetune.steps", key="finetune.epochs"
        )
    return plan_schedule(search_compute(task.config, costs), costs, stages, task.config)


@dataclass(frozen=True)
class BudgetSchedule:
    """One budget's share of a budgeted search: ``screens`` screened plans (its ``baselines`` first, then rounds of
    proposals), then ``rungs`` of finalists, all inside ``compute`` batches."""

    budget: float
    compute: int
    screens: int
    baselines: int
    rungs: tuple[Rung, ...]
    costs: UnitCosts

    @property
    def planned(self) -> Compute:
        return _planned(self.costs, self.screens, self.rungs)

    @property
    def trials(self) -> int:
        return self.screens + sum(r.finalists for r in self.rungs)

    def describe(self) -> str:
        rungs = ", then ".join(f"{r.finalists} x {r.steps} steps" for r in self.rungs)
        return (
            f"budget {self.budget:g}: {self.compute} batches; screen {self.screens} plans ({self.baselines} baselines "
            f"first), fine-tune {rungs} ({self.compute - self.planned.total} left over)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "compute": self.compute,
            "screens": self.screens,
            "baselines": self.baselines,
            "rungs": [{"finalists": r.finalists, "steps": r.steps} for r in self.rungs],
        }


@dataclass(frozen=True)
class BudgetedSchedule:
    """A budgeted search: the total compute in batches, split over budgets by ``study.budget_weights``."""

    total: int
    budgets: tuple[BudgetSchedule, ...]
    costs: UnitCosts
    round_size: int
    n_trials: int | None = None  # the study.n_trials the total was derived from; None: study.stages.budget

    @property
    def trials(self) -> int:
        return sum(b.trials for b in self.budgets)

    @property
    def screens(self) -> int:
        return sum(b.screens for b in self.budgets)

    def describe(self) -> str:
        lines = [
            f"budgeted search: {self.total} batches{_bought(self.n_trials)} buy {self.trials} trials "
            f"({self.screens} screens, {_count(self.trials - self.screens, 'fine-tune')}) over "
            f"{_count(len(self.budgets), 'budget')}; "
            f"a screen costs {self.costs.screen().total}, a standard fine-tune {self.costs.standard().total}"
        ]
        return "\n".join(lines + [f"  {b.describe()}" for b in self.budgets])

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "round_size": self.round_size,
            "budgets": [b.to_dict() for b in self.budgets],
            "unit_costs": {"recalibration": self.costs.recalibration, "validation": self.costs.validation},
        }


def budget_schedule(
    budget: float, compute: int, costs: UnitCosts, stages: StagesConfig, config: Config, baselines: int
) -> BudgetSchedule | None:
    """The most promotion rungs (up to ``stages.promote.rungs``) and rung-0 finalists whose fine-tunes fit in the
    finalists' share of ``compute``, with at least ``baselines`` screens and ``factor ** (rungs - 1)`` rung-0
    finalists (so that every rung can promote); every batch left goes to screening. None when not even the
    baselines and one finalist fit."""
    factor, screen = stages.promote.factor, costs.screen().total
    share = math.floor(compute * (1.0 - stages.screen.share))
    # Without a fine-tune (finetune.epochs 0) a longer rung would be no longer: one rung of finalists.
    for count in range(stages.promote.rungs if costs.finetune_steps > 0 else 1, 0, -1):
        steps = [costs.finetune_steps * factor**r for r in range(count)]

        def finalists_cost(first: int, steps: list[int] = steps, count: int = count) -> int:
            counts = _rung_counts(first, count, factor)
            return sum(n * costs.finetune(s).total for n, s in zip(counts, steps, strict=True))

        first = 0
        while finalists_cost(first + 1) <= share:
            first += 1
        while first > 0 and (compute - finalists_cost(first)) // max(screen, 1) < max(baselines, first):
            first -= 1  # the baselines are screened whatever the split, and every finalist needs a screen
        if first < 1 or first < factor ** (count - 1):
            continue
        screens = (compute - finalists_cost(first)) // max(screen, 1)
        budgets = [FinetuneBudget.of(config)] + [FinetuneBudget(0, s) for s in steps[1:]]
        counts = _rung_counts(first, count, factor)
        rungs = tuple(Rung(n, b, s) for n, b, s in zip(counts, budgets, steps, strict=True))
        return BudgetSchedule(budget, compute, int(screens), baselines, rungs, costs)
    return None


def search_compute(config: Config, costs: UnitCosts) -> int:
    """A staged or budgeted search's compute in batches: ``study.stages.budget``, or what ``study.n_trials``
    single-search trials cost."""
    study = config.study
    return study.stages.budget if study.stages.budget is not None else study.n_trials * costs.standard().total


def budgeted_schedule(config: Config, costs: UnitCosts, baselines: int, total: int | None = None) -> BudgetedSchedule:
    """The budgeted schedule: ``total`` batches (default: ``search_compute``) split over ``study.budgets`` by their
    weights; each budget screens its ``baselines`` first."""
    study = config.study
    total = search_compute(config, costs) if total is None else total
    parts = []
    for budget, weight in zip(study.budgets, study.weights, strict=True):
        compute = math.floor(total * weight)
        part = budget_schedule(budget, compute, costs, study.stages, config, baselines)
        if part is None:
            need = least_total(lambda c, b=budget: budget_schedule(b, c, costs, study.stages, config, baselines), weight)
            key = "study.stages.budget" if study.stages.budget is not None else "study.n_trials"
            raise ConfigError(
                f"budget {budget:g} gets {compute} of {total} batches, too few to screen its {baselines} baselines "
                f"({costs.screen().total} each) and fine-tune one finalist ({costs.standard().total}); raise the "
                f"total to {need} batches ({math.ceil(need / costs.standard().total)} trials)",
                key=key,
            )
        parts.append(part)
    n_trials = None if study.stages.budget is not None else study.n_trials
    return BudgetedSchedule(total, tuple(parts), costs, study.allocation.round_size, n_trials)


def least_total(fits: Any, weight: float) -> int:
    """The smallest total whose ``weight`` share ``fits`` (a schedule, not None): doubling, then bisection."""
    high = 1
    while fits(math.floor(high * weight)) is None:
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(math.floor(middle * weight)) is not None else (middle, high)
    return high


def compute_record(schedule: Schedule | BudgetedSchedule) -> dict[str, Any]:
    """What a schedule's compute buys, as the study records it (``COMPUTE_ATTR``): the ``study.n_trials`` it was
    derived from (None: ``study.stages.budget``), the batches, and the trials they buy."""
    total = schedule.budget if isinstance(schedule, Schedule) else schedule.total
    return {
        "n_trials": schedule.n_trials,
        "unit": "study.n_trials counts single-search trials of compute; the study holds `trials` trials",
        "batches": total,
        "trials": schedule.trials,
        "screens": schedule.screens,
        "finetunes": schedule.trials - schedule.screens,
    }
