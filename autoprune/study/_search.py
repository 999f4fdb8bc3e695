from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import optuna
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState

from autoprune.config import Config, dump_config
from autoprune.errors import AutopruneError
from autoprune.study._frame import BASE_ATTR, trials_frame
from autoprune.study._objective import Objective, PhaseHook
from autoprune.study._storage import make_sampler, open_study
from autoprune.study._task import Log, Task, atomic_write_bytes, prepare_task

__all__ = [
    "FINISHED",
    "WARM_START_ATTR",
    "FailureStreak",
    "SearchAborted",
    "SearchInterrupted",
    "enqueue_warm_start",
    "metric_names",
    "search",
]

WARM_START_ATTR = "warm_start_enqueued"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
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
        if trial.state == TrialState.FAIL:
            self.count += 1
            self.last_error = str(trial.user_attrs.get("error", "unknown error"))
        else:
            self.count = 0
        if self.tripped:
            study.stop()

    @property
    def tripped(self) -> bool:
        return self.count >= self.limit


def metric_names(config: Config) -> list[str]:
    metric = config.metric.split(":")[-1]
    cost = "MACs (relative)" if config.objectives[1] == "macs" else "params (relative)"
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
    """``trials.csv`` in the output folder, written whole then renamed."""
    atomic_write_bytes(config.output / "trials.csv", trials_frame(study).to_csv(index=False).encode())


def search(
    config: Config,
    *,
    log: Log = lambda _: None,
    callbacks: Sequence[StudyCallback] = (),
    on_phase: PhaseHook | None = None,
    on_ready: Callable[[optuna.Study, Task], None] | None = None,
) -> optuna.Study:
    """Run (or resume) the study that ``config`` describes; returns it. What ``autoprune search`` runs."""
    task = prepare_task(config, log)
    atomic_write_bytes(config.output / "config.resolved.yaml", dump_config(config).encode())
    study = open_study(
        config.storage_url,
        config.study_name,
        sampler=make_sampler(config.study.sampler, config.study.seed),
        metric_names=metric_names(config),
    )
    study.set_user_attr(
        BASE_ATTR, {"metric": task.base_metric, "macs": task.base_macs, "params": task.base_params}
    )
    study.set_user_attr("groups", [g.to_dict() for g in task.groups])
    enqueue_warm_start(study, task)

    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    remaining = max(0, config.study.n_trials - finished)
    log(
        f"study {config.study_name!r}: {len(task.groups)} groups, base {metric_names(config)[0]} "
        f"{task.base_metric:.4f}, {task.base_macs / 1e6:.2f} M MACs; {finished} trials done, {remaining} to run"
    )
    if on_ready is not None:
        on_ready(study, task)
    started = time.perf_counter()
    streak = FailureStreak(config.study.max_consecutive_failures)
    if remaining:
        try:
            study.optimize(
                Objective(task, on_phase),
                n_trials=remaining,
                timeout=config.study.timeout,
                # A failing trial (a model that breaks on a pruned shape, a NaN loss, out of memory) is marked
                # FAIL with its reason, and the study goes on.
                catch=(Exception,),
                callbacks=[MaxTrialsCallback(config.study.n_trials, states=FINISHED), streak, *callbacks],
                gc_after_trial=False,
            )
        except KeyboardInterrupt:
            write_outputs(config, study)
            raise SearchInterrupted(study) from None
    write_outputs(config, study)
    if streak.tripped:
        raise SearchAborted(
            f"stopped after {streak.count} failed trials in a row (last: {streak.last_error}); the model or "
            f"config is probably broken (see the `error` user attribute of each trial in {config.output / 'trials.csv'})"
        )
    log(f"search finished in {time.perf_counter() - started:.1f}s; wrote {config.output / 'trials.csv'}")
    return study


