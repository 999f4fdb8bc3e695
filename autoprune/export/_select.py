"""Which trial to export: by number, under a MACs, latency (or cost) budget, a budgeted study's pick at one of its
budgets, above a metric floor, or the knee.

Only COMPLETE, feasible trials can be exported. A rule that finds nothing raises a one-line ConfigError that
says why and lists the nearest valid choices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune._registry import Registry
from autoprune.errors import ConfigError
from autoprune.study import budget_of, budget_winner, is_final, pareto_optimal

__all__ = [
    "SELECTION_RULES",
    "Selection",
    "is_exportable",
    "Candidates",
    "chord_heights",
    "pareto_optimal",
    "select_trial",
    "why_not_exportable",
]

NEAREST = 5  # how many valid choices an error lists


@dataclass(frozen=True)
class Selection:
    """``Selection("trial", 17)``, ``Selection("max_macs", 0.3)``, ``Selection("max_cost", 0.1)`` (the study's cost
    objective: MACs, params, non-zero params or latency), ``Selection("max_latency", 0.5)`` (the latency the search
    measured, relative to the base), ``Selection("min_metric", 0.97)``, ``Selection("knee")``."""

    rule: str
    value: float | None = None

    @property
    def flag(self) -> str:
        """The command-line flag for this rule, used as the key of its errors."""
        return "--" + self.rule.replace("_", "-")

    def describe(self) -> str:
        return self.flag if self.value is None else f"{self.flag} {self.value:g}"


@dataclass(frozen=True)
class Candidates:
    """What a rule chooses from: every trial of the study, and the base model's metric."""

    trials: Sequence[FrozenTrial]
    base_metric: float | None = None

    @property
    def valid(self) -> list[FrozenTrial]:
        return [t for t in self.trials if is_exportable(t)]


SelectionRule = Callable[[Candidates, Selection], FrozenTrial]
SELECTION_RULES: Registry[SelectionRule] = Registry("selection rule")


def why_not_exportable(trial: FrozenTrial) -> str | None:
    """Why a trial cannot be exported (its state, or the constraint it breaks), or None when it can."""
    if trial.state != TrialState.COMPLETE:
        reason = trial.user_attrs.get("error") or ""
        return f"its state is {trial.state.name}" + (f" ({reason})" if reason else "")
    if "plan" not in trial.user_attrs:
        return "it records no plan"
    if not is_final(trial):
        return "it was only screened (scored after BatchNorm recalibration, never fine-tuned)"
    broken = {k: v for k, v in trial.constraints.items() if v > 0.0}
    if broken or trial.user_attrs.get("feasible") is False:
        detail = ", ".join(f"{k} exceeded by {v:.3f}" for k, v in broken.items())
        return f"it is infeasible ({detail or 'feasible is false'})"
    return None


def is_exportable(trial: FrozenTrial) -> bool:
    return why_not_exportable(trial) is None


def _macs(trial: FrozenTrial) -> float:
    return float(trial.user_attrs["macs_relative"])


def _latency(trial: FrozenTrial) -> float:
    return float(trial.user_attrs["latency_relative"])


def _cost(trial: FrozenTrial) -> float:
    """The study's second objective: relative MACs, params or non-zero params."""
    return float(trial.values[1])


def _metric(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def _describe(trials: Sequence[FrozenTrial]) -> str:
    if not trials:
        return "none"
    return ", ".join(f"#{t.number} (metric {_metric(t):.4f}, MACs {_macs(t):.3f})" for t in trials)


def _nearest_by(valid: Sequence[FrozenTrial], key: Callable[[FrozenTrial], float]) -> str:
    return _describe(sorted(valid, key=lambda t: (key(t), t.number))[:NEAREST])


def chord_heights(points: Sequence[tuple[float, float]]) -> list[float]:
    """How far each (cost, metric) point lies above the chord joining the cheapest and the dearest point.

    Both axes are scaled to [0, 1] first, so the units of the cost and the metric do not matter. The knee of a
    front is its highest point.
    """
    costs, metrics = [p[0] for p in points], [p[1] for p in points]
    c_span = (max(costs) - min(costs)) or 1.0
    m_span = (max(metrics) - min(metrics)) or 1.0
    scaled = [((c - min(costs)) / c_span, (m - min(metrics)) / m_span) for c, m in points]
    (x0, y0) = scaled[min(range(len(scaled)), key=lambda i: scaled[i][0])]
    (x1, y1) = scaled[max(range(len(scaled)), key=lambda i: scaled[i][0])]
    norm = ((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5 or 1.0
    return [((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) / norm for x, y in scaled]


@SELECTION_RULES.register("trial")
def _by_number(candidates: Candidates, selection: Selection) -> FrozenTrial:
    number = int(selection.value or 0)
    asked = next((t for t in candidates.trials if t.number == number), None)
    reason = "the study has no such trial" if asked is None else why_not_exportable(asked)
    if asked is None or reason is not None:
        nearest = _nearest_by(candidates.valid, lambda t: abs(t.number - number))
        raise ConfigError(f"trial {number} cannot be exported: {reason}; nearest valid trials: {nearest}", key=selection.flag)
    return asked


def _best_within(candidates: Candidates, budget: float, cost: Callable[[FrozenTrial], float], what: str, flag: str) -> FrozenTrial:
    """The best metric among valid trials whose ``cost`` is at most ``budget``; else an error listing the cheapest."""
    valid = candidates.valid
    fits = [t for t in valid if cost(t) <= budget]
    if not fits:
        cheapest = ", ".join(f"#{t.number} (metric {_metric(t):.4f}, {what} {cost(t):.3f})" for t in sorted(valid, key=cost)[:NEAREST])
        raise ConfigError(
            f"no valid trial has {what} <= {budget:g} of the base; cheapest valid trials: {cheapest or 'none'}", key=flag
        )
    return min(fits, key=lambda t: (-_metric(t), cost(t), t.number))


@SELECTION_RULES.register("max_macs")
def _best_under_budget(candidates: Candidates, selection: Selection) -> FrozenTrial:
    return _best_within(candidates, float(selection.value or 0.0), _macs, "MACs", selection.flag)


@SELECTION_RULES.register("max_latency")
def _best_under_latency(candidates: Candidates, selection: Selection) -> FrozenTrial:
    if not any("latency_relative" in t.user_attrs for t in candidates.valid):
        raise ConfigError(
            "the study measured no latency; search with objectives: [metric, latency] or constraints.max_latency",
            key=selection.flag,
        )
    measured = Candidates([t for t in candidates.trials if "latency_relative" in t.user_attrs], candidates.base_metric)
    return _best_within(measured, float(selection.value or 0.0), _latency, "latency", selection.flag)


@SELECTION_RULES.register("max_cost")
def _best_under_cost(candidates: Candidates, selection: Selection) -> FrozenTrial:
    return _best_within(candidates, float(selection.value or 0.0), _cost, "cost", selection.flag)


@SELECTION_RULES.register("budget")
def _budget_winner(candidates: Candidates, selection: Selection) -> FrozenTrial:
    """A budgeted study's pick at one of its budgets: the best finalist of the longest fine-tune there."""
    budget = float(selection.value or 0.0)
    built = sorted({b for t in candidates.trials if (b := budget_of(t)) is not None}, reverse=True)
    if not built:
        raise ConfigError("the study is not a budgeted search; use --max-cost or --max-macs", key=selection.flag)
    match = next((b for b in built if math.isclose(b, budget, rel_tol=1e-9)), None)
    winner = budget_winner(candidates.valid, match) if match is not None else None
    if winner is None:
        found = ", ".join(f"{b:g}" for b in built if budget_winner(candidates.valid, b) is not None)
        raise ConfigError(f"the study has no finalist at budget {budget:g}; budgets with one: {found or 'none'}", key=selection.flag)
    return winner


@SELECTION_RULES.register("min_metric")
def _cheapest_above_floor(candidates: Candidates, selection: Selection) -> FrozenTrial:
    floor = float(selection.value or 0.0)
    valid = candidates.valid
    fits = [t for t in valid if _metric(t) >= floor]
    if not fits:
        best = _nearest_by(valid, lambda t: -_metric(t))
        raise ConfigError(f"no valid trial has a metric >= {floor:g}; best valid trials: {best}", key=selection.flag)
    return min(fits, key=lambda t: (_cost(t), _macs(t), -_metric(t), t.number))


@SELECTION_RULES.register("knee")
def _knee(candidates: Candidates, selection: Selection) -> FrozenTrial:
    front = [t for t in pareto_optimal(candidates.valid) if t.values[1] < 1.0]
    if not front:
        raise ConfigError("no valid trial costs less than the base model: the front has no knee", key=selection.flag)
    # The unpruned base model anchors the dear end of the front (cost 1.0), as in the front table.
    base = candidates.base_metric if candidates.base_metric is not None else max(_metric(t) for t in front)
    heights = chord_heights([(1.0, base)] + [(t.values[1], t.values[0]) for t in front])[1:]
    return front[max(range(len(front)), key=lambda i: (heights[i], front[i].values[0]))]


def select_trial(study: optuna.Study, selection: Selection, base_metric: float | None = None) -> FrozenTrial:
    """The trial ``selection`` picks among the study's COMPLETE, feasible trials."""
    rule = SELECTION_RULES.get(selection.rule)
    candidates = Candidates(study.get_trials(deepcopy=False), base_metric)
    if selection.rule != "trial" and not candidates.valid:
        raise ConfigError(f"study {study.study_name!r} has no COMPLETE, feasible trial to export", key=selection.flag)
    return rule(candidates, selection)
