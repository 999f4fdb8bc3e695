from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from optuna.distributions import BaseDistribution

from autoprune.config import SpaceSpec
from autoprune.plan import PruningPlan, Scope, SparsityPlan
from autoprune.ranking import ChannelImportances, snap_plan
from autoprune.space._budgeted import SCOPE_PARAM, budget_distributions, check_budgets, projected_entries
from autoprune.space._global import SCALE_PARAM, check_importances
from autoprune.space._optimizers import optuna_distribution
from autoprune.space._schedules import RatioSchedule, get_ratio_schedule, param_name
from autoprune.space._sparsity import SparsitySpace
from autoprune.space._tie import tied_knob

__all__ = ["SCOPE_PARAM", "SearchSpace", "TrialLike", "UNIFORM_BASELINES"]

UNIFORM_BASELINES = tuple(SpaceSpec().warm_start_ratios)  # the presets' default warm-start ratios
# A knob's distribution: ("float", low, high), ("log_float", low, high) or ("categorical", choices).
Distribution = tuple[Any, ...]


class TrialLike(Protocol):
    def suggest_float(self, name: str, low: float, high: float, *, log: bool = False) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Turns a trial into a plan. The only place in autoprune that calls ``trial.suggest_*``.

    ``groups`` are the structured half (empty: no channel is removed); ``sparsity``, when given, the
    unstructured half, sampled after it. ``scope`` is one criteria scope, or several to search (one knob).
    ``ratio_schedule: global_rank`` needs ``importances`` for each (criterion, scope) searched, computed on the
    base model (``autoprune.engine.importance_table``), and with ``target: macs`` ``macs_of(plan)``.
    """

    spec: SpaceSpec
    groups: tuple[str, ...]  # group names, model order
    ratio: tuple[float, float]
    criteria: tuple[str, ...]
    round_to: int = 1
    # prune.round_to auto: per group, the kept counts allowed (the latency staircase, ascending, ending at the
    # group's width), handed down by the study from its latency table; groups absent here are not snapped.
    steps: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    scope: Scope | Sequence[Scope] = "layer"
    # Per-group ratio bounds (from an NNI config_list); groups absent here use ``ratio``.
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    sparsity: SparsitySpace | None = None
    importances: Mapping[tuple[str, str], ChannelImportances] = field(default_factory=dict)
    macs_of: Callable[[PruningPlan], float] | None = None
    # study.search: budgeted: the budgets (relative costs) every plan is projected onto, and what measures a
    # plan's relative cost; the allocation's knobs come from the preset (see autoprune.space._budgeted).
    budgets: tuple[float, ...] = ()
    cost_of: Callable[[PruningPlan], float] | None = None

    def __post_init__(self) -> None:
        if self.budgets and self.groups:
            check_importances(self, who="the budgeted search", key="prune.criteria")
            check_budgets(self)
            return
        self.schedule.check(self)

    @property
    def schedule(self) -> RatioSchedule:
        """The preset's ratio schedule (a registered :class:`RatioSchedule`)."""
        return get_ratio_schedule(self.spec)

    @property
    def scopes(self) -> tuple[Scope, ...]:
        """The criteria scopes; the first is the one a plan gets when the scope is not searched."""
        return (self.scope,) if isinstance(self.scope, str) else tuple(self.scope)

    def scope_of(self, params: Mapping[str, Any]) -> Scope:
        return params[SCOPE_PARAM] if len(self.scopes) > 1 else self.scopes[0]

    def criterion_param(self, group: str) -> str:
        return param_name("criterion", self._knob(group, self.spec.criterion))

    def criterion_of(self, group: str, params: Mapping[str, Any]) -> str:
        return str(params[self.criterion_param(group)])

    def channels(self) -> dict[str, int]:
        """Each group's channel count (read off the base model's importances, which every budgeted space has)."""
        first = next(iter(self.importances.values()))
        return {group: first.channels[group] for group in self.groups}

    def scale_param(self, group: str) -> str:
        """``scale:<knob>``: a global_rank group's scale factor (absent with ratio: shared, where it is 1)."""
        return param_name(SCALE_PARAM, self.knob(group))

    def ratio_param(self, group: str) -> str:
        """``ratio:<knob>``: the ratio an independent schedule reads for ``group``."""
        return param_name("ratio", self.knob(group))

    def knob(self, group: str) -> str:
        """``group``'s ratio knob: its stage, its own name, its tied type, or "" (one shared knob)."""
        return self._knob(group, self.spec.ratio)

    def ratio_bounds(self, group: str) -> tuple[float, float]:
        lo, hi = self.bounds.get(group, self.ratio)
        return float(lo), float(hi)

    def _knob(self, group: str, granularity: str) -> str:
        if granularity == "shared":
            return ""
        if granularity == "per_stage":
            return ".".join(group.split(".")[: self.spec.stage_depth])
        if granularity == "tied":
            return tied_knob(group)
        return group

    def ratio_knobs(self) -> list[str]:
        """The ratio knobs (stage or group names), model order, once each."""
        return list(dict.fromkeys(self.knob(g) for g in self.groups))

    def global_bounds(self) -> tuple[float, float]:
        """The lowest and highest ratio any group may take: a global knob's range."""
        bounds = [self.ratio_bounds(g) for g in self.groups]
        return min(lo for lo, _ in bounds), max(hi for _, hi in bounds)

    def _distributions(self) -> dict[str, Distribution]:
        """Every searched parameter, in the order ``sample`` suggests them."""
        dists: dict[str, Distribution] = {}
        if not self.groups:
            return dists  # unstructured pruning alone: no ratio to search
        if self.budgets:
            return budget_distributions(self)
        schedule = self.schedule
        dists.update(schedule.global_distributions(self))
        for group in self.groups:
            knob = schedule.group_distribution(self, group)
            if knob is not None:
                dists.setdefault(*knob)
            criterion = param_name("criterion", self._knob(group, self.spec.criterion))
            dists.setdefault(criterion, ("categorical", list(self.criteria)))
        if len(self.scopes) > 1:
            dists[SCOPE_PARAM] = ("categorical", list(self.scopes))
        return dists

    def distributions(self) -> dict[str, Distribution]:
        """Every searched parameter's distribution, in the order ``sample`` suggests them: ``("float", low, high)``,
        ``("log_float", low, high)`` or ``("categorical", choices)``."""
        return self._distributions()

    def optuna_distributions(self) -> dict[str, BaseDistribution]:
        """Every searched parameter's Optuna distribution (as ``sample`` suggests it)."""
        return {name: optuna_distribution(dist) for name, dist in self._distributions().items()}

    def param_names(self) -> list[str]:
        return list(self._distributions())

    def sample(self, trial: TrialLike) -> PruningPlan:
        params: dict[str, Any] = {}
        for name, (kind, *args) in self._distributions().items():
            if kind == "categorical":
                params[name] = trial.suggest_categorical(name, *args)
            elif kind == "log_float":
                params[name] = trial.suggest_float(name, *args, log=True)
            else:
                params[name] = trial.suggest_float(name, *args)
        sparsity = self.sparsity.sample(trial) if self.sparsity is not None else None
        return self._plan(params, sparsity)

    def _plan(self, params: Mapping[str, Any], sparsity: SparsityPlan | None) -> PruningPlan:
        plan = PruningPlan(self._entries(params), round_to=self.round_to, scope=self._plan_scope(params), sparsity=sparsity)
        return snap_plan(plan, self.steps)  # projected and ranked plans are snapped already: a no-op on them

    def _plan_scope(self, params: Mapping[str, Any]) -> Scope:
        return self.scope_of(params) if self.groups else self.scopes[0]

    def _entries(self, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
        if self.budgets and self.groups:
            return projected_entries(self, params)
        if not self.groups:
            return {}
        return self.schedule.entries(self, params)

    def plan_from_params(self, params: Mapping[str, Any]) -> PruningPlan:
        """The plan a finished trial's params describe (the same one ``sample`` built)."""
        sparsity = self.sparsity.from_params(params) if self.sparsity is not None else None
        return self._plan(params, sparsity)

    def uniform_params(self, ratio: float, criterion: str) -> dict[str, Any]:
        """The params of the uniform plan: every group at ``ratio`` (clamped into its own bounds), every
        criterion knob at ``criterion``; offsets and slope at zero; the scope searched at its first choice.

        With ``global_rank``: plain global ranking (every scale 1) at the uniform plan's target: ``ratio`` of all
        channels, or (target macs) the uniform plan's relative MACs."""
        params: dict[str, Any] = {}
        schedule = self.schedule
        for name, (kind, *args) in self._distributions().items():
            if name == SCOPE_PARAM:
                params[name] = self.scopes[0]
            elif kind == "categorical":
                params[name] = criterion
            else:
                own = schedule.uniform_value(self, name, ratio, criterion)
                params[name] = own if own is not None else min(max(ratio, args[0]), args[1])
        return params

    def warm_start(self) -> list[dict[str, Any]]:
        """Uniform baselines: ``spec.warm_start_ratios`` that fit inside some group's bounds, each with every one
        of ``spec.warm_start_criteria`` that this space searches.

        Without groups, the sparsity baselines instead (uniform amounts with each method); with both halves,
        the structured baselines, their sparsity left to the sampler.
        """
        if not self.spec.warm_start or self.budgets:
            return []  # a budgeted study screens its baselines first at every budget (baseline_params)
        if not self.groups:
            return self.sparsity.warm_start() if self.sparsity is not None else []
        bounds = [self.ratio_bounds(g) for g in self.groups]
        criteria = [c for c in self.spec.warm_start_criteria if c in self.criteria]
        baselines: list[dict[str, Any]] = []
        for ratio in self.spec.warm_start_ratios:
            if not any(lo <= ratio <= hi for lo, hi in bounds):
                continue
            for criterion in criteria:
                params = self.uniform_params(ratio, criterion)
                if params not in baselines:
                    baselines.append(params)
        return baselines
