"""The budget-targeted search (``study.search: budgeted``): every candidate is built at one of ``study.budgets``,
and each budget gets its own share of the compute, its own screens and its own finalists.

Per budget, in this order:

1. *screens* (a pruned, BatchNorm-recalibrated plan scored once; ``fidelity: screen``), in rounds: round 0 is the
   hand-picked baselines (uniform with every criterion, global ranking with l1 and l2, each projected onto the
   budget), every later round ``study.allocation.round_size`` allocations proposed by the allocation optimizer from
   the finished rounds before it;
2. *finalists* (``fidelity: finetune``): rung 0 fine-tunes the best baseline by screen score and the best of the
   other screens; each next rung fine-tunes the best ``1 / factor`` of the rung before it by fine-tuned score
   ``factor`` times longer (successive halving, inside the budget).

Every decision is a function of the study's trials alone (a proposal reads only rounds that have finished), so a
resumed search, or another worker on the same storage, makes the same decisions; trials are created directly in
the storage with their params, as the staged search's finalists are. Compute is counted as the staged search
counts it (``STAGE_ATTR``, ``staged_spend``).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autoprune.config import Config
from autoprune.errors import ConfigError
from autoprune.space import ALLOCATION_OPTIMIZERS, BUDGET_PARAM, SearchSpace, baseline_criteria, baseline_params
from autoprune.study._budget import BudgetedSchedule, BudgetSchedule, Compute, budgeted_schedule, unit_costs
from autoprune.study._frame import FIDELITY_ATTR, SCREEN
from autoprune.study._heartbeat import fail_stale
from autoprune.study._objective import SEED_ATTR, FinetuneBudget, Objective, PhaseHook, ScreenRecipe
from autoprune.study._staged import (
    FINETUNE,
    STAGE_ATTR,
    Screening,
    create_running_trial,
    fail_duplicate,
    holds,
    plan_key,
    run_slot,
    staged_spend,
)
from autoprune.study._storage import guard_storage
from autoprune.study._task import Log, Task

__all__ = [
    "BUDGETED_ATTR",
    "SLOT_ATTR",
    "Planner",
    "Step",
    "budget_of",
    "budgeted_plan",
    "check_budgeted_mode",
    "run_budgeted",
]

SLOT_ATTR = "slot"  # trial user attribute: {"budget": index, "kind": "screen" | "finalist", "round" | "rung", "index"}
BUDGETED_ATTR = "budgeted"  # study user attribute: the settings and schedule a budgeted study was started with
StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


def _slot(trial: FrozenTrial) -> Mapping[str, Any]:
    slot = trial.user_attrs.get(SLOT_ATTR)
    return slot if isinstance(slot, dict) else {}


def budget_of(trial: FrozenTrial) -> float | None:
    """The budget a trial of a budgeted search was built at (None for other trials)."""
    budget = trial.params.get(BUDGET_PARAM)
    return float(budget) if isinstance(budget, (int, float)) and SLOT_ATTR in trial.user_attrs else None


def _running(trial: FrozenTrial) -> bool:
    return trial.state in (TrialState.RUNNING, TrialState.WAITING)


def _canonical(trial: FrozenTrial) -> tuple[int, str]:
    """A tie-break that is the same in every process (trial numbers are not, with several workers)."""
    return int(_slot(trial).get("index", -1)), plan_key(trial)


def _scored(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    """Complete, feasible trials, best metric first (ties: slot, then plan), one per plan."""
    seen: set[str] = set()
    ranked = []
    for trial in sorted(trials, key=lambda t: (-t.values[0], _canonical(t))):
        key = plan_key(trial)
        if trial.state == TrialState.COMPLETE and trial.user_attrs.get("feasible") is not False and key not in seen:
            seen.add(key)
            ranked.append(trial)
    return ranked


@dataclass(frozen=True)
class Step:
    kind: str  # "screen", "finalist", "wait" or "done"
    budget: int = -1
    index: int = -1  # screens: the slot index (baselines first); finalists: the rung
    params: Mapping[str, Any] | None = None  # a screen's params
    source: FrozenTrial | None = None  # a finalist's screened (or previous-rung) trial
    round: int = -1


class Planner:
    """The next step of a budgeted search, from the study's trials alone."""

    def __init__(
        self,
        space: SearchSpace,
        schedule: BudgetedSchedule,
        optimizer: str,
        seed: int,
        factor: int,
        baselines: Sequence[str] | None = None,
    ) -> None:
        self.space, self.schedule, self.seed, self.factor = space, schedule, seed, factor
        self.baselines = baselines  # study.baselines: the baselines screened; None: all
        self.optimizer = ALLOCATION_OPTIMIZERS.get(optimizer, key="study.allocation.optimizer")()
        self.allocation = {n: d for n, d in space.distributions().items() if n != BUDGET_PARAM}
        self._proposals: dict[tuple[int, int, str], list[dict[str, Any]]] = {}

    def rounds(self, part: BudgetSchedule) -> list[tuple[int, int]]:
        """(first slot, size) of each screening round of one budget: the baselines, then proposals."""
        rounds = [(0, min(part.baselines, part.screens))]
        start = rounds[0][1]
        while start < part.screens:
            size = min(self.schedule.round_size, part.screens - start)
            rounds.append((start, size))
            start += size
        return rounds

    def proposals(self, index: int, round_: int, size: int, history: Sequence[FrozenTrial]) -> list[dict[str, Any]]:
        """Round ``round_``'s params at budget ``index``: the baselines, or the optimizer's proposals from the
        complete screens of the earlier rounds (in slot order, so that the history is the same everywhere)."""
        budget = self.schedule.budgets[index].budget
        if round_ == 0:
            return baseline_params(self.space, budget, self.baselines)[:size]
        scored = [t for t in sorted(history, key=lambda t: _slot(t)["index"]) if t.state == TrialState.COMPLETE]
        pairs = [({n: t.params[n] for n in self.allocation if n in t.params}, float(t.values[0])) for t in scored]
        key = (index, round_, json.dumps([[t.number, v] for t, (_, v) in zip(scored, pairs, strict=True)]))
        if key not in self._proposals:
            seed = (self.seed * 1_000_003 + index * 1009 + round_) % 2**32
            found = self.optimizer.propose(self.allocation, pairs, size, seed)
            self._proposals[key] = [{BUDGET_PARAM: budget, **params} for params in found]
        return self._proposals[key]

    def next_step(self, trials: Sequence[FrozenTrial]) -> Step:
        """The runnable step of the earliest phase (screening round r, then rung k) over all budgets, budget
        order breaking ties; "wait" when only steps whose inputs still run elsewhere are left."""
        steps = [self._budget_step(index, part, trials) for index, part in enumerate(self.schedule.budgets)]
        runnable = [(phase, i, s) for i, (phase, s) in enumerate(steps) if s.kind in ("screen", "finalist")]
        if runnable:
            return min(runnable, key=lambda entry: (entry[0], entry[1]))[2]
        return Step("wait") if any(s.kind == "wait" for _, s in steps) else Step("done")

    def _budget_step(self, index: int, part: BudgetSchedule, trials: Sequence[FrozenTrial]) -> tuple[int, Step]:
        mine = [t for t in trials if _slot(t).get("budget") == index]
        screens = [t for t in mine if _slot(t).get("kind") == "screen"]
        held = {_slot(t)["index"] for t in screens if holds(t)}
        rounds = self.rounds(part)
        for round_, (start, size) in enumerate(rounds):
            free = [j for j in range(start, start + size) if j not in held]
            if not free:
                continue
            earlier = [t for t in screens if _slot(t)["index"] < start and holds(t)]
            if any(_running(t) for t in earlier):
                return round_, Step("wait", index)
            params = self.proposals(index, round_, size, earlier)[free[0] - start]
            return round_, Step("screen", index, free[0], params, round=round_)
        if any(_running(t) for t in screens):
            return len(rounds), Step("wait", index)
        return self._finalist_step(index, part, mine, screens, len(rounds))

    def _finalist_step(
        self, index: int, part: BudgetSchedule, mine: Sequence[FrozenTrial], screens: Sequence[FrozenTrial], phase: int
    ) -> tuple[int, Step]:
        ranked = _scored([t for t in screens if t.values is not None])
        baselines = [t for t in ranked if _slot(t).get("round") == 0]
        rest = [t for t in ranked if not baselines or t.number != baselines[0].number]
        wanted = (baselines[:1] + rest)[: part.rungs[0].finalists]
        for rung, plan in enumerate(part.rungs):
            finalists = [t for t in mine if _slot(t).get("kind") == "finalist" and _slot(t).get("rung") == rung]
            if rung > 0:
                previous = [t for t in mine if _slot(t).get("kind") == "finalist" and _slot(t).get("rung") == rung - 1]
                if any(_running(t) for t in previous):
                    return phase + rung, Step("wait", index)
                keys = {plan_key(t) for t in wanted}
                done = _scored([t for t in previous if t.values is not None and plan_key(t) in keys])
                wanted = done[: min(plan.finalists, math.ceil(len(wanted) / self.factor))]
            taken = {plan_key(t) for t in finalists if holds(t)}
            for source in wanted:
                if plan_key(source) not in taken:
                    return phase + rung, Step("finalist", index, rung, source=source)
        return phase + len(part.rungs), Step("done", index)


def budgeted_plan(task: Task) -> tuple[BudgetedSchedule, Planner]:
    """``task``'s schedule and planner; a config the budgeted search cannot run is one ConfigError."""
    config = task.config
    if not task.space.budgets:
        raise ConfigError(
            "the budgeted search allocates channels of prunable groups; this run has none (prune.mode unstructured "
            "alone, or every group ignored): set study.search: single",
            key="study.search",
        )
    study = config.study
    schedule = budgeted_schedule(config, unit_costs(task), len(baseline_criteria(task.space.criteria, study.baselines)))
    planner = Planner(
        task.space, schedule, study.allocation.optimizer, study.seed, study.stages.promote.factor, study.baselines
    )
    return schedule, planner


def _settings(config: Config) -> dict[str, Any]:
    study = config.study
    settings = {
        "budgets": list(study.budgets),
        "weights": list(study.weights),
        "allocation": study.allocation.model_dump(mode="json"),
        "stages": study.stages.model_dump(mode="json", exclude={"budget"}),
    }
    if study.baselines is not None:  # recorded only when set, so studies started before the key still resume
        settings["baselines"] = list(study.baselines)
    return settings


def check_budgeted_mode(study: optuna.Study, config: Config, schedule: BudgetedSchedule | None = None) -> None:
    """Refuse (one line) to resume a budgeted study with other budgets or allocation settings, to run a
    budgeted search on a study of another kind, or another search on a budgeted study; record the settings on a
    new one when given its ``schedule`` (without it, only check: before anything is written)."""
    recorded = study.user_attrs.get(BUDGETED_ATTR)
    if config.study.search != "budgeted":
        if isinstance(recorded, dict):
            raise ConfigError(
                f"study {study.study_name!r} was started as a budgeted search; set study.search: budgeted to resume it",
                key="study.search",
            )
        return
    settings = _settings(config)
    if isinstance(recorded, dict):
        if recorded.get("settings") != settings:
            raise ConfigError(
                f"study {study.study_name!r} was started with other budgets or allocation settings "
                f"({recorded.get('settings')}); use --study-name to start a new study beside it",
                key="study.budgets",
            )
        return
    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
        raise ConfigError(
            f"study {study.study_name!r} holds trials of another search; use --study-name for a budgeted one",
            key="study.search",
        )
    if schedule is not None:
        study.set_user_attr(BUDGETED_ATTR, {"settings": settings, **schedule.to_dict()})


def slot_seed(study_seed: int, slot: Mapping[str, Any], plan_key: str = "") -> int:
    """The seed of a slot: the same in every worker and on resume (trial numbers are not)."""
    text = json.dumps([study_seed, dict(slot), plan_key], sort_keys=True)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def _create(
    study: optuna.Study, storage: BaseStorage, study_id: int, step: Step, planner: Planner, worker: Mapping[str, Any] | None
) -> tuple[optuna.Trial, int]:
    costs = planner.schedule.costs
    part = planner.schedule.budgets[step.budget]
    attrs: dict[str, Any]
    if step.kind == "screen":
        assert step.params is not None
        slot = {"budget": step.budget, "kind": "screen", "round": step.round, "index": step.index}
        attrs = {FIDELITY_ATTR: SCREEN, SLOT_ATTR: slot, SEED_ATTR: slot_seed(planner.seed, slot)}
        dists = {n: d for n, d in planner.space.optuna_distributions().items() if n in step.params}
        return create_running_trial(study, storage, study_id, dict(step.params), dists, attrs, worker)
    source = step.source
    assert source is not None
    rung = part.rungs[step.index]
    slot = {"budget": step.budget, "kind": "finalist", "rung": step.index}
    attrs = {
        FIDELITY_ATTR: FINETUNE,
        SLOT_ATTR: slot,
        SEED_ATTR: slot_seed(planner.seed, slot, plan_key(source)),
        STAGE_ATTR: {"rung": step.index, "source": source.number, **costs.finetune(rung.steps).to_dict()},
        "plan": source.user_attrs.get("plan"),
    }
    return create_running_trial(study, storage, study_id, dict(source.params), dict(source.distributions), attrs, worker)


def _duplicate_of(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """Two workers that chose the same slot at once: the lower trial number keeps it."""
    slot = trial.user_attrs.get(SLOT_ATTR, {})
    plan = plan_key(trial)
    for other in study.get_trials(deepcopy=False):
        if other.number < trial.number and holds(other) and _slot(other) == slot:
            if slot.get("kind") == "screen" or plan_key(other) == plan:
                return other.number
    return None


def run_budgeted(
    study: optuna.Study,
    storage: BaseStorage,
    task: Task,
    schedule: BudgetedSchedule,
    planner: Planner,
    *,
    on_phase: PhaseHook | None = None,
    timeout: float | None = None,
    callbacks: Sequence[StudyCallback] = (),
    worker: Mapping[str, Any] | None = None,
    catch: tuple[type[Exception], ...] = (),
    stop: Callable[[], bool] = lambda: False,
    log: Log = lambda _: None,
    poll_s: float = 0.5,
) -> Compute:
    """Run (or resume, or join) the budgeted search; returns the study's spend so far."""
    deadline = None if timeout is None else time.monotonic() + timeout
    screening = Screening(Objective(task, on_phase, finetune=FinetuneBudget(0), screen=ScreenRecipe.of(task)), schedule.costs)
    rungs = max(len(part.rungs) for part in schedule.budgets)
    finetunes = [
        Objective(task, on_phase, finetune=next(p.rungs[r].budget for p in schedule.budgets if r < len(p.rungs)))
        for r in range(rungs)
    ]
    with guard_storage(storage):
        study_id = storage.get_study_id_from_name(study.study_name)
        while (deadline is None or time.monotonic() < deadline) and not stop():
            fail_stale(study)
            step = planner.next_step(study.get_trials(deepcopy=False))
            if step.kind == "done":
                break
            if step.kind == "wait":
                time.sleep(poll_s)
                continue
            trial, trial_id = _create(study, storage, study_id, step, planner, worker)
            if fail_duplicate(study, trial, _duplicate_of(study, trial)):
                continue
            objective = screening if step.kind == "screen" else finetunes[step.index]
            run_slot(study, storage, trial, trial_id, objective, step.source, catch, callbacks)
    spent = staged_spend(study)
    log(
        f"budgeted search: spent {spent.total} of {schedule.total} batches ({spent.train_steps} optimizer steps, "
        f"{spent.forward_batches} forward batches)"
    )
    return spent

