"""A search fitted to its compute, before anything is trained or written.

A staged or budgeted search spends ``study.n_trials`` single-search trials' worth of compute (or
``study.stages.budget`` batches) on screens and fine-tunes. When that is too little for what the config asks, the
search shrinks in a stated order and says so in one line, instead of refusing after the base model is trained:

1. fewer budgets (those listed first are kept),
2. fewer baselines (global and uniform ranking with l2 are kept longest: ``baselines_by_priority``),
3. a single search of ``study.n_trials`` trials.

A compute given in batches (``study.stages.budget``) is never exceeded: it shrinks 1 and 2, then is refused.
Everything here reads the resolved config (the model's structure and the loaders' lengths), never a trained model,
so ``validate`` prints the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoprune.config import Config
from autoprune.errors import ConfigError, did_you_mean
from autoprune.evaluate import FirstBatches
from autoprune.space import baseline_criteria, baseline_name, baselines_by_priority
from autoprune.study._budget import (
    BudgetedSchedule,
    Schedule,
    UnitCosts,
    budgeted_schedule,
    plan_schedule,
    recipe_costs,
    search_compute,
)
from autoprune.study._resolve import Resolved
from autoprune.study._task import fit_budgets

__all__ = ["FittedSearch", "fit_search", "scored_batches", "search_costs"]

BUDGETED_KEYS = ("stages", "budgets", "budget_weights", "allocation", "baselines")
MIN_BASELINES = 2  # global-l2 and uniform-l2: the two plans a user would try first


@dataclass(frozen=True)
class FittedSearch:
    """The config as the search will run it (budgets, baselines or mode fitted), what it prints first, and its
    schedule (None for a single search)."""

    config: Config
    notes: list[str] = field(default_factory=list)  # warnings: default budgets out of reach, the shrink line
    schedule: BudgetedSchedule | Schedule | None = None

    def lines(self) -> list[str]:
        """What ``search`` and ``validate`` print before the search: the notes, then the schedule."""
        notes = [f"warning: {note}" for note in self.notes]
        return notes + ([self.schedule.describe()] if self.schedule is not None else [])


def scored_batches(config: Config, loader: Any) -> Any:
    """The validation batches a candidate's score reads: the first ``finetune.val_batches`` of ``loader`` with the
    built-in recipe; all of it with the user's (its own ``score`` decides)."""
    if config.evaluator is None and config.finetune.val_batches is not None:
        return FirstBatches(loader, config.finetune.val_batches)
    return loader


def search_costs(config: Config, resolved: Resolved) -> UnitCosts:
    """What a screen and a fine-tune cost with ``config``'s recipe, on the resolved data and model."""
    validation = scored_batches(config, resolved.data.val)
    return recipe_costs(config, resolved.data.train, validation, resolved.model)


def fit_search(config: Config, resolved: Resolved) -> FittedSearch:
    """``config`` fitted to its compute (see the module docstring); a config that cannot run is one ConfigError."""
    config, notes = fit_budgets(config, resolved)
    mode = config.study.search
    if mode == "single":
        return FittedSearch(config, notes)
    if mode == "budgeted" and not resolved.groups:
        raise ConfigError(
            "the budgeted search allocates channels of prunable groups; this run has none (prune.mode unstructured "
            "alone, or every group ignored): set study.search: single",
            key="study.search",
        )
    costs = search_costs(config, resolved)
    if mode == "staged":
        return _fit_staged(config, costs, notes)
    return _fit_budgeted(config, costs, notes)


def _fit_staged(config: Config, costs: UnitCosts, notes: list[str]) -> FittedSearch:
    if costs.finetune_steps == 0:
        raise ConfigError(
            "the staged search fine-tunes its finalists; set finetune.epochs or finetune.steps", key="finetune.epochs"
        )
    stages = config.study.stages
    try:
        return FittedSearch(config, notes, plan_schedule(search_compute(config, costs), costs, stages, config))
    except ConfigError as exc:
        if stages.budget is not None:
            raise  # a compute given in batches is never exceeded
        why = str(exc).removeprefix(f"{exc.key}: ") if exc.key else str(exc)
        return _single(config, notes, f"{_asked(config, costs)}: {why}")


def _with(config: Config, **study: Any) -> Config:
    return config.model_copy(update={"study": config.study.model_copy(update=study)})


def _single(config: Config, notes: list[str], why: str) -> FittedSearch:
    """``config`` as a single search of ``study.n_trials`` trials, with the line that says so."""
    n = config.study.n_trials
    line = f"{why}; running a single search of {n} trial{'s' * (n != 1)} instead (study.search: single)"
    fields = type(config.study).model_fields
    # The keys of the staged and budgeted searches back at their defaults, so that the config stays valid.
    reset = {name: fields[name].get_default(call_default_factory=True) for name in BUDGETED_KEYS}
    single = _with(config, search="single", **reset)
    return FittedSearch(single, [*notes, line])


def _asked(config: Config, costs: UnitCosts) -> str:
    total = search_compute(config, costs)
    if config.study.stages.budget is not None:
        return f"study.stages.budget {total} batches"
    n = config.study.n_trials
    return f"study.n_trials {n} (the compute of {n} single-search trial{'s' * (n != 1)}, {total} batches)"


def _baselines(config: Config) -> list[str]:
    """The baselines the config screens (``study.baselines``, checked against the criteria), in screening order."""
    criteria = config.prune.criteria
    every = [baseline_name(*pair) for pair in baseline_criteria(criteria)]
    given = config.study.baselines
    if given is None:
        return every
    for name in given:
        if name not in every:
            raise ConfigError(
                f"unknown baseline {name!r}{did_you_mean(name, every)}; with prune.criteria {list(criteria)} the "
                f"baselines are {', '.join(every)}",
                key="study.baselines",
            )
    return [name for name in every if name in given]


def _shrinks(config: Config, kept: list[str]) -> list[tuple[list[float], list[float], list[str]]]:
    """The smaller searches to try, in order: fewer budgets (those listed first kept), then, at one budget,
    fewer baselines (down to global-l2 and uniform-l2)."""
    study = config.study
    budgets, weights = list(study.budgets), list(study.budget_weights or [1.0] * len(study.budgets))
    tries = [(budgets[:k], weights[:k], kept) for k in range(len(budgets) - 1, 0, -1)]
    order = [n for n in baselines_by_priority(config.prune.criteria) if n in kept]
    for count in range(len(kept) - 1, min(MIN_BASELINES, len(kept)) - 1, -1):
        fewer = [n for n in kept if n in order[:count]]
        tries.append((budgets[:1], weights[:1], fewer))
    return tries


def _schedule(config: Config, costs: UnitCosts, budgets: list[float], weights: list[float], kept: list[str]) -> Any:
    """The budgeted schedule with these budgets and baselines, or None when they do not fit the compute."""
    every = [baseline_name(*pair) for pair in baseline_criteria(config.prune.criteria)]
    trial = _with(
        config, budgets=budgets, budget_weights=weights if config.study.budget_weights is not None else None,
        baselines=None if kept == every and config.study.baselines is None else kept,
    )  # fmt: skip
    try:
        return trial, budgeted_schedule(trial, costs, len(kept))
    except ConfigError:
        return None


def _least(fits: Callable[[int], bool]) -> int:
    """The smallest total (batches) that ``fits``: doubling, then bisection."""
    high = 1
    while not fits(high):
        high *= 2
    low = high // 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle, high)
    return high


def _fit_budgeted(config: Config, costs: UnitCosts, notes: list[str]) -> FittedSearch:
    kept = _baselines(config)
    full = _schedule(config, costs, list(config.study.budgets), list(config.study.budget_weights or []), kept)
    if full is not None:
        return FittedSearch(config, notes, full[1])
    need = _least(lambda total: _fits(config, costs, kept, total))
    key = "study.n_trials" if config.study.stages.budget is None else "study.stages.budget"
    least = f"{key} {math.ceil(need / costs.standard().total) if key == 'study.n_trials' else need}"
    for budgets, weights, fewer in _shrinks(config, kept):
        found = _schedule(config, costs, budgets, weights, fewer)
        if found is not None:
            shrunk, schedule = found
            return FittedSearch(shrunk, [*notes, _shrink_line(config, costs, schedule, budgets, kept, fewer, least)], schedule)
    why = f"{_asked(config, costs)} cannot screen a budget's baselines and fine-tune one finalist (the whole search needs {least})"
    if config.study.stages.budget is not None:
        raise ConfigError(why, key="study.stages.budget")
    return _single(config, notes, why)


def _fits(config: Config, costs: UnitCosts, kept: list[str], total: int) -> bool:
    try:
        budgeted_schedule(config, costs, len(kept), total)
    except ConfigError:
        return False
    return True


def _shrink_line(
    config: Config,
    costs: UnitCosts,
    schedule: BudgetedSchedule,
    budgets: Sequence[float],
    kept: Sequence[str],
    fewer: Sequence[str],
    least: str,
) -> str:
    gone = [f"{b:g}" for b in config.study.budgets if b not in budgets]
    dropped = [f"budgets {', '.join(gone)}"] if gone else []
    if len(fewer) < len(kept):
        dropped.append(f"baselines {', '.join(n for n in kept if n not in fewer)}")
    rungs = max(len(part.rungs) for part in schedule.budgets)
    if rungs < config.study.stages.promote.rungs:
        dropped.append("promotion")
    return (
        f"{_asked(config, costs)} is too little for every budget's baselines and fine-tunes: searching budget"
        f"{'s' * (len(budgets) != 1)} {', '.join(f'{b:g}' for b in budgets)} with baselines {', '.join(fewer)}; "
        f"dropped {'; '.join(dropped)} (the whole search needs {least})"
    )
