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

__all__ = ["Compute", "Rung", "Schedule", "UnitCosts", "plan_schedule", "staged_schedule", "unit_costs"]


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

    def screen(self) -> Compute:
        return Compute(0, self.recalibration + self.validation)

    def finetune(self, steps: int) -> Compute:
        return Compute(steps, self.recalibration + 2 * self.validation)  # scored before and after the fine-tune

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
    ft = task.config.finetune
    train = _length(task.data.train, "data", "the training loader")
    validation = getattr(task.evaluator, "validation", task.data.val)  # the built-in's val_batches subset
    has_norms = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in task.base_model.modules())
    if ft.steps is not None:
        steps = ft.steps
    elif ft.epochs > 0:
        steps = ft.epochs * train
    else:
        raise ConfigError(
            "the staged search fine-tunes its finalists; set finetune.epochs or finetune.steps", key="finetune.epochs"
        )
    return UnitCosts(
        recalibration=min(ft.bn_recalibration_batches, train) if has_norms else 0,
        validation=_length(validation, "data", "the validation loader"),
        finetune_steps=steps,
    )


@dataclass(frozen=True)
class Rung:
    finalists: int  # planned; fewer when fewer distinct plans qualify
    budget: FinetuneBudget  # rung 0: the configured fine-tune; rung r: factor**r times its steps
    steps: int


@dataclass(frozen=True)
class Schedule:
    budget: int
    screens: int
    rungs: tuple[Rung, ...]
    costs: UnitCosts

    @property
    def planned(self) -> Compute:
        spent = self.costs.screen().times(self.screens)
        for rung in self.rungs:
            spent = spent + self.costs.finetune(rung.steps).times(rung.finalists)
        return spent

    @property
    def trials(self) -> int:
        return self.screens + sum(r.finalists for r in self.rungs)

    def describe(self) -> str:
        rungs = ", then ".join(f"{r.finalists} x {r.steps} steps" for r in self.rungs)
        planned = self.planned.total
        return (
            f"staged search: budget {self.budget} batches; screen {self.screens} plans "
            f"({self.costs.screen().total} each), fine-tune {rungs} ({planned} planned, {self.budget - planned} left over)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "screens": self.screens,
            "rungs": [{"finalists": r.finalists, "steps": r.steps} for r in self.rungs],
            "unit_costs": {"recalibration": self.costs.recalibration, "validation": self.costs.validation},
        }


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
    return Schedule(budget, int(screens), rungs, costs)


def staged_schedule(task: Task) -> Schedule:
    """``task``'s schedule: ``study.stages.budget``, or ``study.n_trials`` standard trials."""
    stages = task.config.study.stages
    costs = unit_costs(task)
    budget = stages.budget if stages.budget is not None else task.config.study.n_trials * costs.standard().total
    return plan_schedule(budget, costs, stages, task.config)
