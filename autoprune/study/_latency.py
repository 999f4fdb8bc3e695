"""The study's latency cache: one study user attribute per measured architecture, so every worker on the storage
(SQLite, PostgreSQL, a journal file) reuses what any of them measured, and a resumed study measures nothing twice."""

from __future__ import annotations

from typing import Any

import optuna

from autoprune.evaluate import LatencyMeter, MemoryCache, needs_latency
from autoprune.study._resolve import factory_search_paths
from autoprune.study._task import Task

__all__ = ["CACHE_PREFIX", "StudyLatencyCache", "latency_meter", "process_latency_meter"]

CACHE_PREFIX = "latency:"  # study user attribute latency:<architecture key> -> Measurement.to_dict()


class StudyLatencyCache:
    """Measurements kept as study user attributes. Two workers that measure the same new architecture at once
    both write it; the second write either replaces the first (an upsert) or, where the storage refuses a
    duplicate key, is dropped: either figure is as good."""

    def __init__(self, study: optuna.Study) -> None:
        self.study = study

    def get(self, key: str) -> dict[str, Any] | None:
        value = self.study.user_attrs.get(CACHE_PREFIX + key)
        return value if isinstance(value, dict) else None

    def put(self, key: str, value: dict[str, Any]) -> None:
        try:
            self.study.set_user_attr(CACHE_PREFIX + key, value)
        except Exception:  # a unique-key race with another worker (sqlalchemy's IntegrityError), or a real fault
            if self.get(key) is None:
                raise

    def keys(self) -> list[str]:
        attrs = self.study.user_attrs
        return [k.removeprefix(CACHE_PREFIX) for k in attrs if k.startswith(CACHE_PREFIX)]


def latency_meter(task: Task, cache: Any = None) -> LatencyMeter | None:
    """The meter a run with ``task`` measures candidates with (None when it measures no latency), keeping its
    figures in ``cache`` (a :class:`StudyLatencyCache`; default: this process's memory)."""
    config = task.config
    if not needs_latency(config):
        return None
    return LatencyMeter(
        config.latency,
        task.runtime,
        task.base.model,
        task.base.example_inputs,
        {g.name: g.channels for g in task.base.groups},
        cache=cache if cache is not None else MemoryCache(),
        search_paths=factory_search_paths(config),
        table=task.latency_table,
    )


def process_latency_meter(task: Task) -> LatencyMeter | None:
    """One meter per task for plans run without a study (uniform sweeps, benchmarks): kept on the task, so the
    base model is measured once."""
    if task.process_meter is None:
        task.process_meter = latency_meter(task)  # stays None (rebuilt cheaply) when the run measures no latency
    return task.process_meter
