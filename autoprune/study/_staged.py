"""The staged (multi-fidelity) search: screen many plans cheaply, fine-tune the best of each cost band, then
fine-tune the best of those longer (successive halving), all inside one compute budget.

Optuna 5 cannot prune the trials of a multi-objective study, so fidelity is autoprune's own. Every candidate is
a trial of the study, and its fidelity is recorded on it:

- a *screened* trial (``fidelity: screen``) was pruned, BatchNorm-recalibrated and scored once, with no backward
  pass. It is COMPLETE with its values and no constraint of its own, so the sampler learns from its score (TPE
  ranks infeasible trials by their violation alone). The front, the report's hypervolume and export read only
  final-fidelity trials (``is_final``, ``front_trials``), and the dashboard's view marks screens infeasible;
- a *finalist* (``fidelity: finetune``) re-runs a screened plan (its params copied, so ``space.sample`` returns
  the same plan) with a fine-tune of its rung's length; ``finetune`` records that length and its seed is the
  usual ``trial_seed`` of its number, so export re-creates it exactly.

Compute is counted in batches through the model: one optimizer step or one forward batch is 1. A screen costs
its recalibration and validation batches, a fine-tune its optimizer steps plus recalibration and two scores.
The schedule (how many screens, how many finalists per rung) is a function of the budget and these unit costs
alone, and every later decision (which plans are finalists, which are promoted) a function of the study's
trials, so a resumed search, or another worker on the same storage, computes the same next step.
"""

from __future__ import annotations

import datetime
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial, TrialState

from autoprune.config import Config, StagesConfig
from autoprune.errors import ConfigError
from autoprune.study._budget import Compute, Schedule, UnitCosts
from autoprune.study._frame import FIDELITY_ATTR, SCREEN, is_final
from autoprune.study._heartbeat import fail_stale
from autoprune.study._loop import FINISHED, WORKER_ATTR, run_one, run_trials
from autoprune.study._objective import FinetuneBudget, Objective, PhaseHook, ScreenRecipe
from autoprune.study._storage import guard_storage
from autoprune.study._task import Log, Task

__all__ = [
    "FINETUNE",
    "Screening",
    "create_running_trial",
    "fail_duplicate",
    "holds",
    "plan_key",
    "run_slot",
    "STAGES_ATTR",
    "STAGE_ATTR",
    "band_of",
    "check_mode",
    "run_staged",
    "staged_spend",
]

FINETUNE = "finetune"  # the fidelity of a finalist
STAGE_ATTR = "stage"  # trial user attribute: rung and source trial (finalists), and the compute it cost
STAGES_ATTR = "stages"  # study user attribute: the stage settings and schedule the study was started with
StudyCallback = Callable[[optuna.Study, FrozenTrial], None]


def band_of(cost: float, count: int, low: float) -> int:
    """The band of a relative cost: ``count`` log-spaced bands from ``low`` to 1, anything below ``low`` in 0."""
    if cost <= low:
        return 0
    return min(count - 1, int(math.log(cost / low) / math.log(1.0 / low) * count))


def plan_key(trial: FrozenTrial | optuna.Trial) -> str:
    """A trial's plan as a canonical string: finalists and their slots are named by it."""
    return json.dumps(trial.user_attrs.get("plan"), sort_keys=True)


def _stage(trial: FrozenTrial) -> Mapping[str, Any]:
    stage = trial.user_attrs.get(STAGE_ATTR)
    return stage if isinstance(stage, dict) else {}


def _rung(trial: FrozenTrial) -> int | None:
    rung = _stage(trial).get("rung")
    return rung if isinstance(rung, int) and not isinstance(rung, bool) else None


def _feasible(trial: FrozenTrial) -> bool:
    return trial.user_attrs.get("feasible") is not False and all(v <= 0.0 for v in trial.constraints.values())


def _by_band(trials: Sequence[FrozenTrial], take: int, stages: StagesConfig) -> list[FrozenTrial]:
    """The first ``take`` of ``trials`` (one per plan) taken band by band: the best of every band, then the second
    best of every band, ..., from the cheapest band up; ties go to the lower trial number."""
    bands: dict[int, list[FrozenTrial]] = defaultdict(list)
    seen: set[str] = set()
    for trial in sorted(trials, key=lambda t: (-t.values[0], t.number)):
        key = plan_key(trial)
        if key not in seen:
            seen.add(key)
            bands[band_of(trial.values[1], stages.bands.count, stages.bands.low)].append(trial)
    order = [
        bands[b][rank]
        for rank in range(max(map(len, bands.values()), default=0))
        for b in sorted(bands)
        if rank < len(bands[b])
    ]
    return order[:take]


def holds(trial: FrozenTrial) -> bool:
    """Whether ``trial`` holds its finalist slot. A failure that would repeat (same plan, same seed) holds it;
    one from an interruption or a dead worker (no error recorded) frees it, as does a losing duplicate."""
    if trial.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING):
        return True
    error = str(trial.user_attrs.get("error", ""))
    return (
        trial.state == TrialState.FAIL and bool(error) and error != "interrupted" and not error.startswith("duplicate")
    )


@dataclass(frozen=True)
class NextStep:
    kind: str  # "run" (rung, source), "wait" (a rung is still running elsewhere) or "done"
    rung: int = -1
    source: FrozenTrial | None = None


def next_step(trials: Sequence[FrozenTrial], schedule: Schedule, stages: StagesConfig) -> NextStep:
    """What to run next, from the trials alone: the first free finalist slot of the lowest unfinished rung."""
    candidates = [
        t for t in trials if t.state == TrialState.COMPLETE and not is_final(t) and _feasible(t) and t.values[1] < 1.0
    ]
    wanted = _by_band(candidates, schedule.rungs[0].finalists, stages)
    for index, rung in enumerate(schedule.rungs):
        if index > 0:
            previous = [t for t in trials if _rung(t) == index - 1]
            if any(t.state in (TrialState.RUNNING, TrialState.WAITING) for t in previous):
                return NextStep("wait")
            keys = {plan_key(t) for t in wanted}
            done = [t for t in previous if t.state == TrialState.COMPLETE and plan_key(t) in keys]
            wanted = _by_band(done, min(rung.finalists, math.ceil(len(wanted) / stages.promote.factor)), stages)
        held = {plan_key(t) for t in trials if _rung(t) == index and holds(t)}
        for source in wanted:
            if plan_key(source) not in held:
                return NextStep("run", index, source)
    return NextStep("done")


def staged_spend(study: optuna.Study) -> Compute:
    """The compute of the study's completed staged trials (screens and finalists)."""
    spent = Compute()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        stage = _stage(trial)
        spent = spent + Compute(int(stage.get("train_steps", 0)), int(stage.get("forward_batches", 0)))
    return spent


def check_mode(study: optuna.Study, config: Config, schedule: Schedule | None = None) -> None:
    """Refuse (one line) to mix a single and a staged search in one study, or to change the stage settings
    (other than the budget) of a staged one; record them on a new staged study when given its ``schedule``
    (without it, only check: before anything is written)."""
    recorded = study.user_attrs.get(STAGES_ATTR)
    if config.study.search != "staged":
        if isinstance(recorded, dict):
            raise ConfigError(
                f"study {study.study_name!r} was started as a staged search; set study.search: staged to resume it",
                key="study.search",
            )
        return
    settings = config.study.stages.model_dump(mode="json", exclude={"budget"})
    if isinstance(recorded, dict):
        if recorded.get("settings") != settings:
            raise ConfigError(
                f"study {study.study_name!r} was started with other stage settings ({recorded.get('settings')}); "
                "use --study-name to start a new study beside it",
                key="study.stages",
            )
        return
    if any(t.state in FINISHED and FIDELITY_ATTR not in t.user_attrs for t in study.get_trials(deepcopy=False)):
        raise ConfigError(
            f"study {study.study_name!r} holds trials of a single search; use --study-name for a staged one",
            key="study.search",
        )
    if schedule is not None:
        study.set_user_attr(STAGES_ATTR, {"settings": settings, **schedule.to_dict()})


class Screening:
    """The objective of stage 1: ``objective`` without a fine-tune, its trial marked as screened."""

    def __init__(self, objective: Objective, costs: UnitCosts) -> None:
        self.objective = objective
        self.costs = costs

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        # No constraint marks a screen: the sampler splits infeasible trials by their violation alone, so screens
        # all marked alike would teach it nothing. Front readers skip them by FIDELITY_ATTR (is_final).
        trial.set_user_attr(FIDELITY_ATTR, SCREEN)
        values = self.objective(trial)
        # A plan over a constraint is scored raw, without recalibration: it costs its validation batches only.
        screened = trial.user_attrs.get("feasible") is not False
        compute = self.costs.screen() if screened else Compute(0, self.costs.validation)
        trial.set_user_attr(STAGE_ATTR, compute.to_dict())
        return values


def create_running_trial(
    study: optuna.Study,
    storage: BaseStorage,
    study_id: int,
    params: dict[str, Any],
    distributions: dict[str, Any],
    attrs: dict[str, Any],
    worker: Mapping[str, Any] | None,
) -> tuple[optuna.Trial, int]:
    """A RUNNING trial with ``params`` already set (so ``space.sample`` returns their plan) and ``attrs``; created
    directly in the storage, so the sampler and the warm-start queue are left alone."""
    attrs = dict(attrs)
    if worker is not None:
        attrs[WORKER_ATTR] = dict(worker)
    template = FrozenTrial(
        number=-1,
        state=TrialState.RUNNING,
        value=None,
        datetime_start=datetime.datetime.now(),
        datetime_complete=None,
        params=params,
        distributions=distributions,
        user_attrs=attrs,
        system_attrs={},
        intermediate_values={},
        trial_id=-1,
    )
    trial_id = storage.create_new_trial(study_id, template_trial=template)
    return optuna.Trial(study, trial_id), trial_id


def _start_finalist(
    study: optuna.Study,
    storage: BaseStorage,
    study_id: int,
    step: NextStep,
    schedule: Schedule,
    worker: Mapping[str, Any] | None,
) -> tuple[optuna.Trial, int]:
    """A finalist: the source's params (so the space samples the same plan) and its stage recorded."""
    source = step.source
    assert source is not None
    compute = schedule.costs.finetune(schedule.rungs[step.rung].steps)
    attrs: dict[str, Any] = {
        FIDELITY_ATTR: FINETUNE,
        STAGE_ATTR: {"rung": step.rung, "source": source.number, **compute.to_dict()},
        "plan": source.user_attrs.get("plan"),  # names the slot at once (the objective records it again)
    }
    return create_running_trial(study, storage, study_id, dict(source.params), dict(source.distributions), attrs, worker)


def _duplicate_of(study: optuna.Study, trial: optuna.Trial, rung: int, key: str) -> int | None:
    """Two workers that chose the same slot at once: the lower trial number keeps it."""
    for other in study.get_trials(deepcopy=False):
        if other.number < trial.number and _rung(other) == rung and plan_key(other) == key and holds(other):
            return other.number
    return None


def fail_duplicate(study: optuna.Study, trial: optuna.Trial, twin: int | None) -> bool:
    """Fail ``trial`` as a duplicate of trial ``twin`` (when there is one), which another worker runs."""
    if twin is None:
        return False
    trial.set_user_attr("error", f"duplicate of trial {twin}, which another worker runs")
    study.tell(trial, state=TrialState.FAIL)
    return True


def run_slot(
    study: optuna.Study,
    storage: BaseStorage,
    trial: optuna.Trial,
    trial_id: int,
    objective: Callable[[optuna.Trial], Sequence[float]],
    source: FrozenTrial | None,
    catch: tuple[type[Exception], ...],
    callbacks: Sequence[StudyCallback],
) -> FrozenTrial:
    """Run a trial created for a slot; a finalist (``source`` given) must re-create its source's plan."""
    frozen = run_one(study, storage, trial, trial_id, objective, catch)
    if source is not None and frozen.state == TrialState.COMPLETE and plan_key(frozen) != plan_key(source):
        raise RuntimeError(f"finalist {frozen.number} re-created another plan than trial {source.number}")
    for callback in callbacks:
        callback(study, frozen)
    return frozen


def _run_finalists(
    study: optuna.Study,
    storage: BaseStorage,
    schedule: Schedule,
    stages: StagesConfig,
    objectives: Sequence[Objective],
    deadline: float | None,
    worker: Mapping[str, Any] | None,
    catch: tuple[type[Exception], ...],
    stop: Callable[[], bool],
    callbacks: Sequence[StudyCallback],
    poll_s: float,
) -> None:
    """Stage 2: take finalist slots one at a time, each decided from the study's trials, until the schedule is
    done, the deadline passes or ``stop()``; wait while a rung's last trials run elsewhere."""
    with guard_storage(storage):
        study_id = storage.get_study_id_from_name(study.study_name)
        while (deadline is None or time.monotonic() < deadline) and not stop():
            fail_stale(study)
            step = next_step(study.get_trials(deepcopy=False), schedule, stages)
            if step.kind == "done":
                break
            if step.kind == "wait":
                time.sleep(poll_s)
                continue
            trial, trial_id = _start_finalist(study, storage, study_id, step, schedule, worker)
            assert step.source is not None
            if fail_duplicate(study, trial, _duplicate_of(study, trial, step.rung, plan_key(step.source))):
                continue
            run_slot(study, storage, trial, trial_id, objectives[step.rung], step.source, catch, callbacks)


def run_staged(
    study: optuna.Study,
    storage: BaseStorage,
    task: Task,
    schedule: Schedule,
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
    """Run (or resume, or join) the staged search ``schedule`` describes; returns the study's spend so far.

    Stage 1 is the ordinary trial loop with a screening objective, until the study holds ``schedule.screens``
    screened trials. Stage 2 takes finalist slots one at a time, each decided from the study's trials, and waits
    while a rung's last trials run elsewhere (a promotion needs the whole rung). ``timeout`` and ``stop`` are
    ``run_trials``'s, over both stages.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    stages = task.config.study.stages
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    # Finalists count in run_trials' total, so they are added to it (a screen just asked has no fidelity yet).
    finalists = sum(1 for t in trials if t.user_attrs.get(FIDELITY_ATTR) == FINETUNE)
    run_trials(
        study,
        storage,
        Screening(Objective(task, on_phase, finetune=FinetuneBudget(0), screen=ScreenRecipe.of(task)), schedule.costs),
        n_trials=schedule.screens + finalists,
        timeout=timeout,
        callbacks=callbacks,
        worker=worker,
        catch=catch,
        stop=stop,
        poll_s=poll_s,
    )
    screened = sum(1 for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if not is_final(t))
    if screened < schedule.screens:
        return staged_spend(study)  # stopped (timeout, failures, interrupt handled by the caller)
    objectives = [Objective(task, on_phase, finetune=rung.budget) for rung in schedule.rungs]
    _run_finalists(study, storage, schedule, stages, objectives, deadline, worker, catch, stop, callbacks, poll_s)
    spent = staged_spend(study)
    log(
        f"staged search: spent {spent.total} of {schedule.budget} batches ({spent.train_steps} optimizer steps, "
        f"{spent.forward_batches} forward batches)"
    )
    return spent
