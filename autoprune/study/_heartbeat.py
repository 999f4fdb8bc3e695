"""Heartbeats: a running trial says it is alive; one that stops saying so is failed after a grace period.

RDBStorage implements Optuna's heartbeat interface itself. JournalStorage does not (Optuna 5), so
``JournalHeartbeatStorage`` adds it: the beat is a trial system attribute holding the wall-clock time, and a
RUNNING trial whose beat is older than the grace period is stale. Optuna's own ``fail_stale_trials`` and
``study.optimize`` then work on it unchanged.

Optuna never calls a trial that never beat stale, but a trial exists (RUNNING) from ``study.ask()`` on, while the
sampler proposes it, before its first beat: a worker or database that dies in between would leave it RUNNING
for ever, and every later search would wait on it. So ``beating`` also marks a trial's first beat
(``BEATS_ATTR``), and ``fail_stale`` fails as well a RUNNING trial without that mark that started more than the
grace period ago (by this machine's clock: machines sharing a study keep their clocks in step).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import optuna
from optuna.storages import BaseStorage, JournalStorage, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat  # Optuna's heartbeat interface (RDBStorage implements it)
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

__all__ = ["BEATS_ATTR", "HEARTBEAT_ATTR", "JournalHeartbeatStorage", "beating", "fail_stale", "heartbeat_interval"]

HEARTBEAT_ATTR = "autoprune:heartbeat"
BEATS_ATTR = "autoprune:beats"  # set at a trial's first beat: its worker got past asking for it
StaleCallback = Callable[[optuna.Study, FrozenTrial], None]


class JournalHeartbeatStorage(JournalStorage, BaseHeartbeat):
    """Optuna's JournalStorage with Optuna's heartbeat interface.

    Machines that share a journal file should keep their clocks in step (NTP): the beat is their wall clock.
    """

    def __init__(
        self,
        backend: BaseJournalBackend,
        *,
        heartbeat_interval: int,
        grace_period: int | None = None,
        stale_trial_callback: StaleCallback | None = None,
    ) -> None:
        if heartbeat_interval <= 0 or (grace_period is not None and grace_period <= 0):
            raise ValueError(f"heartbeat_interval and grace_period must be positive: {heartbeat_interval}, {grace_period}")
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period if grace_period is not None else 2 * heartbeat_interval
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = trial.system_attrs.get(HEARTBEAT_ATTR)
            # Like RDBStorage: a trial that never beat (run without heartbeats) is never called stale.
            if isinstance(beat, (int, float)) and now - beat > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> StaleCallback | None:
        return self.stale_trial_callback


def heartbeat_interval(storage: BaseStorage) -> int | None:
    return storage.get_heartbeat_interval() if isinstance(storage, BaseHeartbeat) else None


def fail_stale(study: optuna.Study) -> None:
    """Mark FAIL every RUNNING trial of ``study`` whose heartbeat is older than the grace period, and every one
    that never beat and started more than the grace period ago."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    storage = study._storage
    interval = heartbeat_interval(storage)
    if interval is None:
        return
    grace = getattr(storage, "grace_period", None) or 2 * interval
    now = datetime.now()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start
        if BEATS_ATTR not in trial.system_attrs and started is not None and (now - started).total_seconds() > grace:
            try:
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # another worker failed it first, or it finished


@contextmanager
def beating(storage: BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat now and every interval until the block ends."""
    interval = heartbeat_interval(storage)
    if interval is None:
        yield
        return
    assert isinstance(storage, BaseHeartbeat)
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # the trial was failed as stale by another worker, or the storage went away
                return

    storage.record_heartbeat(trial_id)  # the first beat before the trial's work starts
    storage.set_trial_system_attr(trial_id, BEATS_ATTR, True)
    thread = threading.Thread(target=beat, name=f"autoprune-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
