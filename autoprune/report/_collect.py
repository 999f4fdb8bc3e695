"""What a report shows, read once from the study: trials, front, base point, group order, hypervolume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from autoprune.errors import ConfigError
from autoprune.report._hypervolume import REFERENCE_POINT, hypervolume, hypervolume_history
from autoprune.study import base_point, pareto_frame, trials_frame

__all__ = ["BUDGETS", "ReportData", "collect"]

BUDGETS = (0.5, 0.25, 0.1)  # relative cost budgets of the report's "best under budget" table


@dataclass(frozen=True)
class ReportData:
    study_name: str
    metric_name: str
    cost_name: str
    base: dict[str, Any]
    trials: pd.DataFrame  # one row per trial (``trials_frame``)
    front: pd.DataFrame  # the base first, then the feasible Pareto front, cheapest last (``pareto_frame``)
    groups: list[str]  # prunable groups in model order
    max_macs: float | None
    wall_seconds: float  # first trial start to last trial end (0 before any trial finished)

    @property
    def scored(self) -> pd.DataFrame:
        """Completed trials with both objectives."""
        if self.trials.empty:
            return self.trials
        return self.trials[(self.trials["state"] == "COMPLETE") & self.trials["cost"].notna()]

    @property
    def feasible(self) -> pd.DataFrame:
        scored = self.scored
        return scored[scored["feasible"].astype(bool)] if not scored.empty else scored

    @property
    def front_trials(self) -> pd.DataFrame:
        """The trials rows of the front (no base), in the front's order."""
        numbers = [int(n) for n in self.front["trial"].iloc[1:]]
        if not numbers:
            return self.trials.iloc[0:0]
        return self.trials.set_index("number").loc[numbers].reset_index()

    def hypervolume(self) -> float:
        feasible = self.feasible
        return hypervolume(zip(feasible["metric"], feasible["cost"], strict=True), REFERENCE_POINT)

    def hypervolume_history(self) -> list[tuple[int, float]]:
        feasible = self.feasible
        points = zip(feasible["number"], feasible["metric"], feasible["cost"], strict=True)
        return hypervolume_history(points, REFERENCE_POINT)

    def best_under(self, budget: float) -> pd.Series | None:
        """The feasible completed trial with the best metric at or below ``budget`` of the relative cost
        (the study's second objective: MACs, params or non-zero params)."""
        feasible = self.feasible
        if feasible.empty:
            return None
        within = feasible[feasible["cost"] <= budget]
        if within.empty:
            return None
        return within.sort_values(["metric", "cost"], ascending=[False, True]).iloc[0]

    @property
    def sparse(self) -> bool:
        """An unstructured study: its trials zero single weights, and the report shows non-zero params and size."""
        return "compressed_bytes" in self.base


def collect(study: optuna.Study, *, max_macs: float | None = None) -> ReportData:
    """Read the study (it may still be running: unfinished trials are counted, never plotted)."""
    try:
        base = base_point(study)
    except ValueError as exc:
        raise ConfigError(str(exc), key="study.name") from None
    names = list(study.metric_names or ["metric", "cost"])
    groups = [str(g["name"]) for g in study.user_attrs.get("groups", [])]
    trials = trials_frame(study)
    if trials.empty:
        trials = pd.DataFrame(columns=["number", "state", "metric", "cost", "feasible", "warm_start", "macs_relative"])
    starts = [t.datetime_start for t in study.get_trials(deepcopy=False) if t.datetime_start is not None]
    ends = [t.datetime_complete for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    return ReportData(
        study_name=study.study_name,
        metric_name=names[0],
        cost_name=names[1],
        base=base,
        trials=trials,
        front=pareto_frame(study),
        groups=groups,
        max_macs=max_macs,
        wall_seconds=wall,
    )
