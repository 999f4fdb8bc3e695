"""One process on a study: join (or create) the study the config names and run trials until it holds ``n_trials``.

``autoprune.study.search`` (``_dispatch``) runs this, or starts local worker processes (``_workers``) that each run
it; the pieces both need (joining the study, writing trials.csv, the interruption) live here.
"""

from __future__ import annotations

import os
import random
import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

import optuna
import torch
from optuna.storages import BaseStorage

from autoprune.config import Config, dump_config
from autoprune.errors import AutopruneError
from autoprune.evaluate import cost_label
from autoprune.study._budget import COMPUTE_ATTR, compute_record, staged_schedule
from autoprune.study._budget_report import summary_lines
from autoprune.study._budgeted import budgeted_plan, check_budgeted_mode, run_budgeted
from autoprune.study._devices import pin_worker_device
from autoprune.study._fit import fit_search
from autoprune.study._frame import trials_frame
from autoprune.study._io import RESOLVED_CONFIG, run_file, write_run_file
from autoprune.study._loop import FINISHED, run_trials
from autoprune.study._objective import Objective, PhaseHook
from autoprune.study._record import DEFINITION_ATTR, check_base, check_definition, record_base, record_definition
from autoprune.study._resolve import factory_search_paths
from autoprune.study._staged import check_mode, run_staged
from autoprune.study._storage import create_or_load_study, make_sampler, open_storage, worker_seed
from autoprune.study._task import Log, Task, prepare_task, resolve

__all__ = [
    "FINISHED",
    "WARM_START_ATTR",
    "FailureStreak",
    "SearchAborted",
    "SearchInterrupted",
    "enqueue_warm_start",
    "join_study",
    "metric_names",
    "open_config_storage",
    "search_single",
    "write_outputs",
]

WARM_START_ATTR = "warm_start_enqueued"
StudyCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]


class SearchAborted(AutopruneError):
    """Too many trials failed in a row: the model or config is probably broken."""


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; ``study`` holds every trial that finished before it."""

    def __init__(self, study: optuna.Study) -> None:
        super().__init__("interrupted")
        self.study = study


class FailureStreak:
    """A study callback that stops the study after ``limit`` failed trials in a row."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self.last_error = ""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == optuna.trial.TrialState.FAIL:
            self.count += 1
            self.last_error = str(trial.user_attrs.get("error", "unknown error"))
        else:
            self.count = 0

    @property
    def tripped(self) -> bool:
        return self.count >= self.limit


def metric_names(config: Config) -> list[str]:
    """The two objectives' names (the study's metric names, shown by the front, the report and the dashboard): the
    metric, and the cost's label (``macs`` is ``MACs (relative)``; a registered cost's label)."""
    metric = config.metric.split(":")[-1]
    cost = cost_label(config.objectives[1], search_paths=factory_search_paths(config)) + " (relative)"
    return [metric, cost]


def enqueue_warm_start(study: optuna.Study, task: Task) -> int:
    """Queue the uniform baselines once per study, so the front is never worse than the best of them."""
    if study.user_attrs.get(WARM_START_ATTR):
        return 0
    baselines = task.space.warm_start()
    for params in baselines:
        study.enqueue_trial(params, user_attrs={"warm_start": True}, skip_if_exists=True)
    study.set_user_attr(WARM_START_ATTR, True)
    return len(baselines)


def write_outputs(config: Config, study: optuna.Study) -> None:
    """``trials.csv`` in the output folder (``trials.<study>.csv`` for a second study there), written whole then
    renamed."""
    write_run_file(run_file(config, "trials.csv"), trials_frame(study).to_csv(index=False).encode())


def open_config_storage(config: Config) -> BaseStorage:
    """The config's storage, with its heartbeat; checked before anything is written (a bad URL creates nothing)."""
    if config.study.storage is None:
        config.output.mkdir(parents=True, exist_ok=True)  # the default SQLite file lives there
    return open_storage(
        config.storage_url,
        heartbeat_interval=config.workers.heartbeat_interval,
        grace_period=config.workers.grace_period,
    )


def _existing_storage(config: Config) -> BaseStorage | None:
    """The config's storage when a study may already be there; None for a default SQLite file not yet created
    (opening it would create it)."""
    if config.study.storage is None and not (config.output / "study.db").is_file():
        return None
    return open_config_storage(config)


def _existing_study(storage: BaseStorage, name: str) -> optuna.Study | None:
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return None


def join_study(
    config: Config, *, log: Log = lambda _: None, worker_index: int | None = None, evaluator: object | None = None
) -> tuple[optuna.Study, BaseStorage, Task, int]:
    """Open the storage, prepare the task (the base model is trained once, under a file lock), and create or
    load the study; returns it with its storage, the task and this worker's index.

    The worker that creates the study queues the warm start, so it is queued once however many start together.
    Its sampler seed derives from the study seed and ``worker_index``: the creator is worker 0 unless told,
    a worker joining without an index draws a random one (distributed runs are not reproducible anyway: which
    trials a sampler sees depends on timing).
    """
    resolved = resolve(config)  # a bad config, model or path fails here, before anything is written
    fitted = fit_search(config, resolved)  # budgets, baselines or the mode fitted to the compute, or refused
    for note in fitted.notes:
        log(f"warning: {note}")
    groups = [g.name for g in resolved.groups]
    storage = _existing_storage(config)
    existing = _existing_study(storage, config.study_name) if storage is not None else None
    if existing is not None:  # a changed config or search is refused before anything is written
        check_definition(existing, fitted.config, groups)
        check_search_mode(existing, fitted.config)
    task = prepare_task(fitted.config, log, resolved=resolved, evaluator=evaluator)
    if storage is None:
        storage = open_config_storage(config)
    index = 0 if worker_index is None else worker_index
    study, created = create_or_load_study(
        storage,
        config.study_name,
        sampler=make_sampler(config.study.sampler, worker_seed(config.study.seed, index)),
        metric_names=metric_names(config),
    )
    if not created and worker_index is None:
        index = random.randrange(1, 2**31)
        study.sampler = make_sampler(config.study.sampler, worker_seed(config.study.seed, index))
        log(f"joined study {config.study_name!r} as worker {index} (pass --worker-index for a fixed sampler seed)")
    sha = check_base(study, config, task)
    if not created:
        check_definition(study, task.config, groups)  # created meanwhile by another worker
        check_search_mode(study, task.config)
    if created or DEFINITION_ATTR not in study.user_attrs:
        record_definition(study, task.config, groups)
    record_base(study, task, sha)
    write_run_file(run_file(config, RESOLVED_CONFIG), dump_config(config).encode())
    if created:
        enqueue_warm_start(study, task)
    return study, storage, task, index


def _what_is_pruned(task: Task) -> str:
    parts = [f"{len(task.base.groups)} groups"] if task.config.prune.structured else []
    if task.config.prune.unstructured_mode:
        parts.append(f"{len(task.base.layers)} layers to sparsify")
    return " and ".join(parts)


def worker_record(index: int, task: Task | None = None) -> dict[str, Any]:
    """Which worker ran a trial: index, host, pid, torch threads, and the device it was given."""
    record: dict[str, Any] = {"index": index, "host": socket.gethostname(), "pid": os.getpid(), "threads": torch.get_num_threads()}
    if task is not None:
        record["device"] = task.runtime.device
    return record


def check_search_mode(study: optuna.Study, config: Config) -> None:
    """Refuse (one line) a search of another mode, or with other stage or budget settings, than ``study`` was
    started with; writes nothing."""
    check_budgeted_mode(study, config)
    check_mode(study, config)


def _resolve_mode(study: optuna.Study, task: Task) -> tuple[Any, Any]:
    """The staged schedule and the budgeted plan of the (fitted) config's ``study.search`` (None for the other
    modes), checked against the mode the study was started with and recorded on a new study, with what the
    compute buys (``COMPUTE_ATTR``, shown by the dashboard)."""
    mode = task.config.study.search
    schedule = staged_schedule(task) if mode == "staged" else None
    budgeted = budgeted_plan(task) if mode == "budgeted" else None
    check_budgeted_mode(study, task.config, budgeted[0] if budgeted is not None else None)
    check_mode(study, task.config, schedule)  # one study is either a single, a staged or a budgeted search
    planned = budgeted[0] if budgeted is not None else schedule
    if planned is not None:
        study.set_user_attr(COMPUTE_ATTR, compute_record(planned))
    return schedule, budgeted


def _run_mode(
    study: optuna.Study,
    storage: BaseStorage,
    task: Task,
    schedule: Any,
    budgeted: Any,
    staged: dict[str, Any],
    on_phase: PhaseHook | None,
) -> None:
    """Run the trials of the search mode: budgeted, staged or single (``staged`` holds the loop's keywords)."""
    config = task.config
    if budgeted is not None:
        run_budgeted(study, storage, task, *budgeted, **staged)
        for line in summary_lines(study):
            staged["log"](line)
    elif schedule is not None:
        run_staged(study, storage, task, schedule, **staged)
    else:
        run_trials(
            study,
            storage,
            Objective(task, on_phase),
            n_trials=config.study.n_trials,
            timeout=config.study.timeout,
            # A failing trial (a model that breaks on a pruned shape, a NaN loss, out of memory) is marked FAIL
            # with its reason, and the study goes on, unless too many fail in a row.
            catch=staged["catch"],
            stop=staged["stop"],
            callbacks=staged["callbacks"],
            worker=staged["worker"],
        )


def search_single(
    config: Config,
    *,
    log: Log = lambda _: None,
    callbacks: Sequence[StudyCallback] = (),
    on_phase: PhaseHook | None = None,
    on_ready: Callable[[optuna.Study, Task], None] | None = None,
    worker_index: int | None = None,
    evaluator: object | None = None,
) -> optuna.Study:
    """Run (or resume, or join) the study that ``config`` describes in this process, as worker ``worker_index``
    (pinned to its GPU with ``workers.devices``); returns it. See ``autoprune.study.search``."""
    # Before any CUDA work: `cuda` and `auto` then resolve to this worker's GPU.
    pin_worker_device(config.workers.devices, worker_index or 0, config.runtime)
    study, storage, task, index = join_study(config, log=log, worker_index=worker_index, evaluator=evaluator)
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, config.study.n_trials - finished)
    schedule, budgeted = _resolve_mode(study, task)
    to_run = f"{remaining} to run" if schedule is None else schedule.describe()
    if budgeted is not None:
        to_run = budgeted[0].describe()
    log(
        f"study {config.study_name!r}: {_what_is_pruned(task)}, base {metric_names(config)[0]} "
        f"{task.base.metric:.4f}, {task.base.macs / 1e6:.2f} M MACs; {finished} trials done, {to_run}"
    )
    if on_ready is not None:
        on_ready(study, task)
    started = time.perf_counter()
    streak = FailureStreak(config.study.max_consecutive_failures)
    try:
        staged: dict[str, Any] = {
            "on_phase": on_phase,
            "timeout": config.study.timeout,
            "catch": (Exception,),
            "stop": lambda: streak.tripped,
            "callbacks": [streak, *callbacks],
            "worker": worker_record(index, task),
            "log": log,
        }
        _run_mode(study, storage, task, schedule, budgeted, staged, on_phase)
    except KeyboardInterrupt:
        write_outputs(config, study)
        raise SearchInterrupted(study) from None
    write_outputs(config, study)
    if streak.tripped:
        raise SearchAborted(
            f"stopped after {streak.count} failed trials in a row (last: {streak.last_error}); the model or "
            f"config is probably broken (see the `error` user attribute of each trial in {run_file(config, 'trials.csv')})"
        )
    log(f"search finished in {time.perf_counter() - started:.1f}s{_bought(study)}; wrote {run_file(config, 'trials.csv')}")
    return study


def _bought(study: optuna.Study) -> str:
    """A staged or budgeted study's trial count against the compute asked for (``COMPUTE_ATTR``), for the last line."""
    compute = study.user_attrs.get(COMPUTE_ATTR)
    if not isinstance(compute, dict):
        return ""
    held = len(study.get_trials(deepcopy=False, states=FINISHED))
    asked = compute.get("n_trials")
    source = f"study.stages.budget {compute.get('batches')} batches" if asked is None else (
        f"study.n_trials {asked}: the compute of {asked} single-search trials, {compute.get('batches')} batches"
    )
    return f"; the study holds {held} trials ({compute.get('screens')} screens planned) for {source}"
