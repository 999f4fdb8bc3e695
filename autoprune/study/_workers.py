"""``--workers N``: N local processes on one study, splitting the CPU between them.

The parent prepares everything once (storage checked, base model trained, study created, warm start queued),
then starts the workers with the ``spawn`` method (no fork of a process that holds torch threads or DB
connections). Each worker joins the study by name and runs the shared trial loop; the parent watches the study
and reports each finished trial to its callbacks, so progress shows in one place.

Ctrl-C (which a terminal sends to the whole process group) or a SIGTERM sent to the parent alone stop the
search as in one process: the parent forwards it, each worker fails its running trial as "interrupted", and
once they have exited the parent writes trials.csv and raises ``SearchInterrupted``.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.process
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from autoprune.config import Config
from autoprune.errors import AutopruneError
from autoprune.study._devices import pin_worker_device, worker_device
from autoprune.study._loop import FINISHED, WORKER_ATTR
from autoprune.study._search import SearchInterrupted, StudyCallback, join_study, search_single, write_outputs
from autoprune.study._storage import guard_storage
from autoprune.study._task import Log, Task

__all__ = ["cpu_cores", "search_with_workers", "threads_per_worker"]


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers`` local processes, so together they use the cores once."""
    return max(1, (cores or cpu_cores()) // workers)


def _take_interrupts_from_the_parent() -> None:
    """The parent owns Ctrl-C and forwards it as SIGTERM, so a worker ignores SIGINT (set before any signal can
    arrive: switching a handler to SIG_IGN while a second signal is pending makes CPython raise "OSError: Signal
    ignored due to race condition" wherever the worker happens to be). Each SIGTERM raises KeyboardInterrupt. One
    that lands in a finalizer is swallowed by Python, so that case is kept quiet and the parent sends SIGTERM
    again until the worker has gone."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, interrupt)
    default_hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if not isinstance(info.exc_value, KeyboardInterrupt):
            default_hook(info)

    sys.unraisablehook = unraisable


def _worker_main(config: Config, index: int, evaluator: object | None = None) -> None:
    """One local worker process: its share of the threads, then the ordinary search loop as worker ``index``
    (which pins it to its GPU with ``workers.devices``, before any CUDA work)."""
    _take_interrupts_from_the_parent()
    torch.set_num_threads(threads_per_worker(config.workers.count))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def log(message: str) -> None:
        print(f"worker {index}: {message}", file=sys.stderr, flush=True)

    try:
        search_single(config, log=log, worker_index=index, evaluator=evaluator)
    except AutopruneError as exc:
        print(f"autoprune: worker {index}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _devices_note(config: Config) -> str:
    devices = config.workers.devices
    if not devices:
        return ""
    return " on " + ", ".join(f"{worker_device(devices, i)}" for i in range(config.workers.count))


def _report_new(study: optuna.Study, seen: set[int], callbacks: Sequence[StudyCallback]) -> None:
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.number not in seen:
            seen.add(trial.number)
            for callback in callbacks:
                callback(study, trial)


class _Interruption:
    """While the parent watches its workers, SIGINT and SIGTERM only set a flag, so they never land inside a
    database read (one cut short can hold SQLite's lock and keep the workers from recording their trials).
    A second signal raises KeyboardInterrupt: stop waiting for the workers."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def _handle(self, _signum: int, _frame: object) -> None:
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()

    def __enter__(self) -> _Interruption:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _stop(processes: Sequence[multiprocessing.process.BaseProcess], wait_s: float = 60.0, resend_s: float = 5.0) -> None:
    """Forward the interruption (each worker takes SIGTERM as Ctrl-C), again every ``resend_s`` to a worker still
    running (an interrupt that landed in a finalizer was lost), and wait for them to record it; a second
    interruption, or a worker that does not stop within ``wait_s``, kills them (``_fail_orphans`` then fails
    their trials)."""
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            alive = [p for p in processes if p.pid is not None and p.is_alive()]
            if not alive:
                break
            for process in alive:
                process.terminate()
            for process in alive:
                process.join(timeout=max(0.0, min(resend_s, deadline - time.monotonic())) / len(alive))
    except KeyboardInterrupt:
        pass
    for process in processes:
        if process.pid is not None and process.is_alive():
            process.kill()
            process.join()


def _fail_orphans(study: optuna.Study, storage: BaseStorage, pids: Sequence[int]) -> None:
    """Fail as "interrupted" any trial still RUNNING for one of these (now stopped) workers: one killed before it
    could record its interruption must not leave its trial running until a heartbeat notices."""
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if isinstance(worker, dict) and worker.get("host") == host and worker.get("pid") in pids:
            try:
                storage.set_trial_user_attr(trial._trial_id, "error", "interrupted")
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it recorded its own end meanwhile


def _supervise(
    config: Config,
    study: optuna.Study,
    storage: BaseStorage,
    processes: Sequence[multiprocessing.process.BaseProcess],
    callbacks: Sequence[StudyCallback],
    log: Log,
    poll_s: float,
) -> None:
    """Start the worker processes and report each trial they finish until all have exited; on Ctrl-C stop them,
    fail their orphaned trials and raise :class:`SearchInterrupted`."""
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    with _Interruption() as interruption, guard_storage(storage):
        try:
            for process in processes:
                process.start()
            while any(p.is_alive() for p in processes) and not interruption.requested.is_set():
                interruption.requested.wait(poll_s)
                _report_new(study, seen, callbacks)
            if interruption.requested.is_set():
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            log("interrupted: each worker fails its running trial as interrupted (Ctrl-C again to kill them)")
            _stop(processes)
            _fail_orphans(study, storage, [p.pid for p in processes if p.pid is not None])
            _report_new(study, seen, callbacks)
            write_outputs(config, study)
            raise SearchInterrupted(study) from None
        except BaseException:
            for process in processes:
                process.join(timeout=10)
                if process.is_alive():
                    process.terminate()
            raise
        _report_new(study, seen, callbacks)
        write_outputs(config, study)


def search_with_workers(
    config: Config,
    *,
    log: Log = lambda _: None,
    callbacks: Sequence[StudyCallback] = (),
    on_ready: Callable[[optuna.Study, Task], None] | None = None,
    poll_s: float = 1.0,
    evaluator: object | None = None,
) -> optuna.Study:
    """``search`` with ``config.workers.count`` local processes; returns the study when they are done."""
    count = config.workers.count
    # The parent trains the base model once, on worker 0's GPU when workers.devices pins them.
    pin_worker_device(config.workers.devices, 0, config.runtime)
    study, storage, task, _index = join_study(config, log=log, worker_index=0, evaluator=evaluator)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    log(
        f"study {config.study_name!r}: {len(task.base.groups)} groups, base {task.base.metric:.4f}; "
        f"{finished} trials done, {max(0, config.study.n_trials - finished)} to run on {count} workers "
        f"x {threads_per_worker(count)} threads{_devices_note(config)}"
    )
    if on_ready is not None:
        on_ready(study, task)
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(config, index, evaluator), name=f"autoprune-worker-{index}")
        for index in range(count)
    ]
    started = time.perf_counter()
    _supervise(config, study, storage, processes, callbacks, log, poll_s)
    done = len(study.get_trials(deepcopy=False, states=FINISHED))
    failed = [(i, p.exitcode) for i, p in enumerate(processes) if p.exitcode != 0]
    for index, code in failed:
        log(f"warning: worker {index} exited with code {code}")
    if failed and done < config.study.n_trials:
        raise AutopruneError(
            f"{len(failed)} of {count} workers failed and the study holds {done} of {config.study.n_trials} trials; "
            "run the command again to finish it"
        )
    log(f"search finished in {time.perf_counter() - started:.1f}s on {count} workers; wrote {config.output / 'trials.csv'}")
    return study
