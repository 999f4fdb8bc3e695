"""Heartbeats: a running trial says it is alive; one that stops saying so is failed after a grace period.

RDBStorage implements Optuna's heartbeat interface itself. JournalStorage does not (Optuna 5), so
``JournalHeartbeatStorage`` adds it: the beat is a trial system attribute holding the wall-clock time, and a
RUNNING trial whose beat is older than the grace period is stale. Optuna's own ``fail_stale_trials`` and
``study.optimize`` then work on it unchanged.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import optuna
from optuna.storages import BaseStorage, JournalStorage, fail_stale_trials
from optuna.storages._heartbeat import BaseHeartbeat  # Optuna's heartbeat interface (RDBStorage implements it)
from optuna.storages.journal import BaseJournalBackend
from optuna.trial import FrozenTrial, TrialState

__all__ = ["HEARTBEAT_ATTR", "JournalHeartbeatStorage", "beating", "fail_stale", "heartbeat_interval"]

HEARTBEAT_ATTR = "autoprune:heartbeat"
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
    """Mark FAIL every RUNNING trial of ``study`` whose heartbeat is older than the grace period."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)


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
    thread = threading.Thread(target=beat, name=f"autoprune-heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
