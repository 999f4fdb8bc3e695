"""``search``: what ``autoprune search`` runs; one process on the study, or local worker processes."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import optuna

from autoprune.config import Config
from autoprune.study._objective import PhaseHook
from autoprune.study._search import StudyCallback, search_single
from autoprune.study._task import Log, Task
from autoprune.study._workers import search_with_workers

__all__ = ["search"]


def search(
    config: Config,
    *,
    log: Log = lambda _: None,
    callbacks: Sequence[StudyCallback] = (),
    on_phase: PhaseHook | None = None,
    on_ready: Callable[[optuna.Study, Task], None] | None = None,
    worker_index: int | None = None,
    evaluator: object | None = None,
) -> optuna.Study:
    """Run (or resume, or join) the study that ``config`` describes; returns it. What ``autoprune search`` runs.

    With ``config.workers.count`` > 1 it starts that many local worker processes on the study. Run the same
    on other machines (with a shared storage) and they join it; ``study.n_trials`` is the study's total.
    With ``config.workers.devices``, worker ``i`` runs on ``cuda:{devices[i % len(devices)]}`` (a process
    without ``worker_index`` on the first of them).

    ``evaluator`` (an object with ``recalibrate``, ``finetune`` and ``score``) replaces the config's
    ``evaluator`` and the built-in one; local worker processes get it pickled.
    """
    if config.workers.count > 1 and worker_index is None:
        return search_with_workers(config, log=log, callbacks=callbacks, on_ready=on_ready, evaluator=evaluator)
    return search_single(
        config, log=log, callbacks=callbacks, on_phase=on_phase, on_ready=on_ready, worker_index=worker_index,
        evaluator=evaluator,
    )
