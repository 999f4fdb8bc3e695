"""``--workers N``: N local processes on one study, splitting the CPU between them.

The parent prepares everything once (storage checked, base model trained, study created, warm start queued),
then starts the workers with the ``spawn`` method (no fork of a process that holds torch threads or DB
connections). Each worker joins the study by name and runs the shared trial loop; the parent watches the study
and reports each finished trial to its callbacks, so progress shows in one place.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Sequence

import optuna
import torch

from autoprune.config import Config
from autoprune.errors import AutopruneError
from autoprune.study._loop import FINISHED
from autoprune.study._search import StudyCallback, join_study, search, write_outputs
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


def _worker_main(config: Config, index: int) -> None:
    """One local worker process: its share of the threads, then the ordinary search loop as worker ``index``."""
    torch.set_num_threads(threads_per_worker(config.workers.count))
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def log(message: str) -> None:
        print(f"worker {index}: {message}", file=sys.stderr, flush=True)

    try:
        search(config, log=log, worker_index=index)
    except AutopruneError as exc:
        print(f"autoprune: worker {index}: error: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _report_new(study: optuna.Study, seen: set[int], callbacks: Sequence[StudyCallback]) -> None:
    for trial in study.get_trials(deepcopy=False):
        if trial.state.is_finished() and trial.number not in seen:
            seen.add(trial.number)
            for callback in callbacks:
                callback(study, trial)


def search_with_workers(
    config: Config,
    *,
    log: Log = lambda _: None,
    callbacks: Sequence[StudyCallback] = (),
    on_ready: Callable[[optuna.Study, Task], None] | None = None,
    poll_s: float = 1.0,
) -> optuna.Study:
    """``search`` with ``config.workers.count`` local processes; returns the study when they are done."""
    count = config.workers.count
    study, _storage, task, _index = join_study(config, log=log, worker_index=0)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    log(
        f"study {config.study_name!r}: {len(task.groups)} groups, base {task.base_metric:.4f}; "
        f"{finished} trials done, {max(0, config.study.n_trials - finished)} to run on {count} workers "
        f"x {threads_per_worker(count)} threads"
    )
    if on_ready is not None:
        on_ready(study, task)
    seen = {t.number for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(config, index), name=f"autoprune-worker-{index}")
        for index in range(count)
    ]
    started = time.perf_counter()
    try:
        for process in processes:
            process.start()
        while any(p.is_alive() for p in processes):
            time.sleep(poll_s)
            _report_new(study, seen, callbacks)
    except BaseException:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
        raise
    _report_new(study, seen, callbacks)
    write_outputs(config, study)
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
