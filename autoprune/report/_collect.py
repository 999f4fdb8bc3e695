"""What a report shows, read once from the study: trials, front, base point, group order, hypervolume."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import optuna
import pandas as pd

from autoprune.errors import ConfigError
from autoprune.report._hypervolume import REFERENCE_POINT, hypervolume, hypervolume_history
from autoprune.study import SCREEN, BudgetSummary, base_point, budget_summaries, pareto_frame, trials_frame

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
    latency: dict[str, Any] | None = None  # how the study measured latency (backend, device, batch, ...); None: not
    budgets: tuple[BudgetSummary, ...] = ()  # a budgeted study's budgets: selected plan and screen fidelity
    recipe: dict[str, Any] | None = None  # the fine-tune recipe the study was started with (finetune.*); None: unknown

    @property
    def latency_trials(self) -> pd.DataFrame:
        """Every completed trial whose latency was measured, infeasible ones too (they are measured, not tuned)."""
        if self.latency is None or "latency_relative" not in self.trials:
            return self.trials.iloc[0:0]
        done = self.trials[(self.trials["state"] == "COMPLETE") & self.trials["latency_relative"].notna()]
        return done[done["macs_relative"].notna()]

    def latency_rank_correlation(self) -> float:
        """Spearman's rank correlation of relative MACs and relative latency over the measured trials (NaN with
        fewer than three, or when either does not vary): how far MACs order candidates as latency does."""
        rows = self.latency_trials
        if len(rows) < 3:
            return float("nan")
        return float(rows["macs_relative"].astype(float).corr(rows["latency_relative"].astype(float), method="spearman"))

    @property
    def latency_source(self) -> str:
        """Where the trials' latency came from: measured, or predicted off the latency table."""
        return str((self.latency or {}).get("source", "measured"))

    @property
    def retimed_trials(self) -> pd.DataFrame:
        """``latency.mode: both``: the trials with a predicted and a timed latency (the fine-tuned ones)."""
        rows = self.latency_trials
        if "latency_measured_relative" not in rows:
            return rows.iloc[0:0]
        return rows[rows["latency_measured_relative"].notna()]

    def prediction_quality(self) -> dict[str, float]:
        """Predicted against timed latency over :attr:`retimed_trials`: Spearman's rank correlation and the
        median absolute error in % of the timed figure (NaN with fewer than three)."""
        rows = self.retimed_trials
        if len(rows) < 3:
            return {"trials": float(len(rows)), "spearman": float("nan"), "median_error": float("nan")}
        predicted, timed = rows["latency_ms"].astype(float), rows["latency_measured_ms"].astype(float)
        return {
            "trials": float(len(rows)),
            "spearman": float(predicted.corr(timed, method="spearman")),
            "median_error": float(((predicted - timed).abs() / timed).median()),
        }

    def latency_noise(self) -> dict[str, float]:
        """The spread (IQR / median) of the measurements the trials made (cache hits reuse one, counted once)."""
        rows = self.latency_trials
        fresh = rows[~rows["latency_cached"].astype(bool)] if "latency_cached" in rows else rows
        spreads = fresh["latency_spread"].astype(float) if "latency_spread" in fresh else pd.Series(dtype=float)
        span = rows["latency_relative"].astype(float)
        return {
            "measurements": float(len(fresh)),
            "cached": float(len(rows) - len(fresh)),
            "median_spread": float(spreads.median()) if len(spreads) else float("nan"),
            "max_spread": float(spreads.max()) if len(spreads) else float("nan"),
            "range": float(span.max() - span.min()) if len(span) else float("nan"),
        }

    @property
    def scored(self) -> pd.DataFrame:
        """Completed trials with both objectives, at final fidelity (a staged search's screened trials are not)."""
        if self.trials.empty:
            return self.trials
        final = self.trials["fidelity"] != SCREEN if "fidelity" in self.trials else True
        return self.trials[(self.trials["state"] == "COMPLETE") & self.trials["cost"].notna() & final]

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

    def best_under(self, budget: float, column: str = "cost") -> pd.Series | None:
        """The feasible completed trial with the best metric at or below ``budget`` of the relative cost (the
        study's second objective: MACs, params, non-zero params or latency; or ``column``, e.g. latency_relative)."""
        feasible = self.feasible
        if feasible.empty or column not in feasible:
            return None
        within = feasible[feasible[column].astype(float) <= budget]
        if within.empty:
            return None
        return within.sort_values(["metric", column], ascending=[False, True]).iloc[0]

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
    measured = [t.user_attrs["latency"] for t in study.get_trials(deepcopy=False) if isinstance(t.user_attrs.get("latency"), dict)]
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
        latency=dict(measured[0]) if measured else None,
        budgets=tuple(budget_summaries(study)),
        recipe=_recipe(study),
    )


def _recipe(study: optuna.Study) -> dict[str, Any] | None:
    """The fine-tune recipe recorded in the study's definition (``finetune.*`` keys), for the report's header."""
    definition = study.user_attrs.get("definition")
    recipe = definition.get("fine-tune recipe") if isinstance(definition, dict) else None
    return recipe if isinstance(recipe, dict) else None
