"""What the user watches: a rich progress bar on a terminal, plain lines elsewhere (CI logs)."""

from __future__ import annotations

import sys
import time
from typing import Any

import optuna
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from autoprune.cli._console import ConsoleProgress, status_column
from autoprune.config import Config
from autoprune.study import FRONT_COLUMNS, Task, budgeted_plan, front_trials, metric_names, staged_schedule

__all__ = ["DEFAULT_BUDGET", "SearchProgress", "print_front"]

DEFAULT_BUDGET = 0.5  # relative MACs under which the best metric is shown when no constraint is set
INFEASIBLE = "infeasible (raw, not fine-tuned)"


class SearchProgress(ConsoleProgress):
    def __init__(self, config: Config, console: Console | None = None) -> None:
        super().__init__(console)
        self.config = config
        self.metric = metric_names(config)[0]
        # The best metric is shown under a budget: max_macs when set, else half the base's cost (the second
        # objective: MACs, or non-zero params in an unstructured study).
        self.budget = config.constraints.max_macs if config.constraints.max_macs is not None else DEFAULT_BUDGET
        source = "max_macs" if config.constraints.max_macs is not None else "default"
        self.budget_key = "macs_relative" if config.constraints.max_macs is not None else f"{config.objectives[1]}_relative"
        cost = "MACs" if config.constraints.max_macs is not None else metric_names(config)[1].removesuffix(" (relative)")
        self.budget_label = f"{cost}<={self.budget:g} ({source})"
        self._bar: Any = None
        self._front = 0
        self._best = "-"
        self._phase = ""
        self._done = 0
        self._total = config.study.n_trials
        self._started = time.monotonic()

    def columns(self) -> tuple[Any, ...]:
        return (
            TextColumn("[bold]{task.description}"),  # trials, or a latency table built on first use
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("left"),
            TimeRemainingColumn(),
            status_column("{task.fields[status]}"),
        )

    def on_ready(self, study: optuna.Study, task: Task) -> None:
        self._done = len([t for t in study.get_trials(deepcopy=False) if t.state.is_finished()])
        self._started = time.monotonic()  # the timeout counts from here, as Optuna's does
        # A staged or budgeted search runs its schedule's screens and finalists, not n_trials trials.
        config = self.config if task is None else task.config  # as fitted: a small compute may run a single search
        mode = config.study.search
        total = config.study.n_trials
        if mode == "staged":
            total = staged_schedule(task).trials
        elif mode == "budgeted":
            total = budgeted_plan(task)[0].trials
        self._total = total
        if self._progress is not None:
            self._bar = self._progress.add_task("trials", total=total, completed=min(self._done, total), status="")

    def _limit(self) -> str:
        timeout = self.config.study.timeout
        if timeout is None:
            return ""
        left = max(0.0, timeout - (time.monotonic() - self._started))
        return f" | timeout {timeout:g}s ({left:.0f}s left)"

    def _status(self) -> str:
        best = f"best {self.metric} {self._best} @ {self.budget_label}"
        return f"front {self._front} | {best}{self._limit()} | {self._phase}"

    def on_phase(self, number: int, phase: str) -> None:
        self._phase = f"trial {number}: {phase}"
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, status=self._status())

    def on_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self._done += 1
        if trial.state == optuna.trial.TrialState.FAIL:
            self.log(f"warning: trial {trial.number} failed: {trial.user_attrs.get('error', 'unknown error')}")
        front = [t for t in front_trials(study) if t.values[1] < 1.0]  # fine-tuned trials only, never screens
        self._front = len(front)
        eligible = [t.values[0] for t in front if t.user_attrs.get(self.budget_key, t.values[1]) <= self.budget]
        self._best = f"{max(eligible):.4f}" if eligible else "-"
        self._phase = ""
        if self._progress is not None and self._bar is not None:
            self._progress.update(self._bar, completed=min(self._done, self._total), status=self._status())
        else:
            values = f"{self.metric} {trial.values[0]:.4f}, cost {trial.values[1]:.3f}" if trial.values else trial.state.name
            if trial.values and trial.user_attrs.get("feasible") is False:
                # Over max_macs: scored as pruned, never fine-tuned, so its metric is not comparable.
                values += f", {INFEASIBLE}"
            elapsed = time.monotonic() - self._started
            print(
                f"trial {trial.number} {trial.state.name.lower()}: {values} | "
                f"front {self._front}, best {self.metric} {self._best} @ {self.budget_label} | {elapsed:.0f}s",
                file=sys.stderr,
                flush=True,
            )


def print_front(front: pd.DataFrame, config: Config, console: Console | None = None) -> None:
    console = console or Console()
    metric, cost = metric_names(config)
    table = Table(title=f"Pareto front: {config.study_name}")
    columns = [c for c in FRONT_COLUMNS if c in front.columns]
    for column in ("trial", metric, *(FRONT_COLUMNS[c] for c in columns), "plan"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    for _, row in front.iterrows():
        cells = [f"{float(row[c]):.3f}" if pd.notna(row[c]) else "-" for c in columns]
        table.add_row(str(row["trial"]), f"{row['metric']:.4f}", *cells, str(row["plan"]))
    console.print(table)
