"""The trial loop every worker runs, on any number of processes and machines sharing one storage.

``--n-trials`` is the study's total. Optuna's ``MaxTrialsCallback`` alone overshoots with several workers (each
checks after its own trial, while others are still running) and, if it counts running trials too, stops early
when a dead worker's trial later fails. So a worker claims a trial with Optuna's ``ask`` and keeps it only if
the finished trials plus every running one (its own included) still fit the total; otherwise it puts the trial
back in the queue. Two workers racing for the last slot both see each other, so neither overshoots.
"""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from autoprune.study._heartbeat import beating, fail_stale
from autoprune.study._storage import guard_storage

__all__ = ["FINISHED", "WORKER_ATTR", "run_one", "run_trials"]

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
WORKER_ATTR = "worker"  # trial user attribute: index, host, pid and torch threads of the worker that ran it
StudyCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
Objective = Callable[[optuna.Trial], Sequence[float]]


def _counts(storage: BaseStorage, study_id: int) -> tuple[int, int]:
    trials = storage.get_all_trials(study_id, deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    running = sum(t.state == TrialState.RUNNING for t in trials)
    return len(trials) - running, running


def run_one(
    study: optuna.Study,
    storage: BaseStorage,
    trial: optuna.Trial,
    trial_id: int,
    objective: Objective,
    catch: tuple[type[Exception], ...],
) -> optuna.trial.FrozenTrial:
    """Like one step of ``study.optimize``: beat while the objective runs, tell the result, re-raise a failure
    unless it is one of ``catch`` (then the trial is FAIL and the loop goes on)."""
    values: Sequence[float] | None = None
    state, error = TrialState.COMPLETE, None
    with beating(storage, trial_id):
        try:
            values = objective(trial)
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except (Exception, KeyboardInterrupt) as exc:
            state, error = TrialState.FAIL, exc
    try:
        frozen = study.tell(trial, values if state == TrialState.COMPLETE else None, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        # Another worker failed it as stale (this one stalled past the grace period): its result is dropped.
        frozen = storage.get_trial(trial_id)
    if error is not None and not isinstance(error, catch):
        raise error
    return frozen


def run_trials(
    study: optuna.Study,
    storage: BaseStorage,
    objective: Objective,
    *,
    n_trials: int,
    timeout: float | None = None,
    callbacks: Sequence[StudyCallback] = (),
    worker: Mapping[str, Any] | None = None,
    catch: tuple[type[Exception], ...] = (),
    stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.5,
) -> int:
    """Run trials until ``study`` holds ``n_trials`` finished ones; returns how many this worker ran.

    ``storage`` is the storage ``study`` was opened on. While the last trials run elsewhere, this worker waits,
    failing any whose heartbeat has lapsed, and runs a replacement for each. No trial starts after ``timeout``
    seconds, nor once ``stop()`` is true (checked after each trial's callbacks; ``study.stop()`` only works
    inside ``study.optimize``). ``catch`` is ``study.optimize``'s: those exceptions fail the trial, not the loop.
    A lost database connection is one ``StorageLost`` error naming the storage.
    """
    with guard_storage(storage):
        return _loop(study, storage, objective, n_trials, timeout, callbacks, worker, catch, stop, poll_s)


def _claim(
    study: optuna.Study, storage: BaseStorage, study_id: int, trial: optuna.Trial, n_trials: int, worker: Mapping[str, Any] | None
) -> int | None:
    """The asked trial's id if it fits the study's total (then it carries ``worker``); else None, and the trial
    is back in the queue. Ctrl-C here fails the trial as "interrupted", as it would inside the objective."""
    try:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        finished, running = _counts(storage, study_id)
        if finished + running > n_trials:
            storage.set_trial_state_values(trial_id, TrialState.WAITING)
            return None
        if worker is not None:
            trial.set_user_attr(WORKER_ATTR, dict(worker))
        return trial_id
    except KeyboardInterrupt:
        if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            trial.set_user_attr("error", "interrupted")
            study.tell(trial, state=TrialState.FAIL)
        raise


def _loop(
    study: optuna.Study,
    storage: BaseStorage,
    objective: Objective,
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[StudyCallback],
    worker: Mapping[str, Any] | None,
    catch: tuple[type[Exception], ...],
    stop: Callable[[], bool],
    poll_s: float,
) -> int:
    deadline = None if timeout is None else time.monotonic() + timeout
    study_id = storage.get_study_id_from_name(study.study_name)
    ran = 0
    while (deadline is None or time.monotonic() < deadline) and not stop():
        fail_stale(study)
        finished, running = _counts(storage, study_id)
        if finished >= n_trials:
            break
        if finished + running >= n_trials:
            time.sleep(poll_s)
            continue
        with warnings.catch_warnings():
            # Optuna warns that heartbeats are meant for study.optimize; this loop records them itself.
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask()
        trial_id = _claim(study, storage, study_id, trial, n_trials, worker)
        if trial_id is None:
            time.sleep(random.uniform(0.05, 0.5))  # a racing worker did the same; try again out of step
            continue
        frozen = run_one(study, storage, trial, trial_id, objective, catch)
        ran += 1
        for callback in callbacks:
            callback(study, frozen)
    return ran
