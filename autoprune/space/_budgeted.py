"""The budget-targeted space (``study.search: budgeted``): an allocation projected onto one budget.

A trial's params are its budget (a relative cost of the cost objective), a *basis* and an allocation on it:

- ``uniform``: each group's channels scored by their position in the group (the k-th weakest of n scores
  (k + 1) / n), so one threshold removes the same fraction of every group: a uniform ``pruning_ratio``;
- ``ranked``: the criterion's importances on the base model, normalised per group (Torch-Pruning's global
  ranking);

then a positive scale per ratio knob (stage or group; 1 everywhere is the plain basis), a criterion per criterion
knob and, when searched, the criteria scope. The projection ranks the scaled scores of every group together and
removes the lowest until the plan's relative cost is at most the budget, with the fewest channels removed (one
threshold, found by bisection on the number of channels it removes). So every candidate of a budget costs the
same, up to one channel step, and differs from the others only in where the cuts go.

The hand-picked baselines are points of this space: uniform with every criterion, and global ranking (ranked,
every scale 1) with l1 and l2. No model runs here: the cost is measured through ``cost_of(plan)``, which the
task supplies.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from autoprune.errors import ConfigError
from autoprune.plan import PruningPlan
from autoprune.ranking import ranked_plan, snap_plan
from autoprune.space._global import RankedSpace
from autoprune.space._tie import tied_knob

__all__ = [
    "BASES",
    "BASIS_PARAM",
    "BUDGET_PARAM",
    "SCOPE_PARAM",
    "BudgetedSpace",
    "GLOBAL_BASELINE_CRITERIA",
    "baseline_criteria",
    "baseline_name",
    "baseline_params",
    "baselines_by_priority",
    "budget_distributions",
    "check_budgets",
    "positional_importances",
    "projected_entries",
]

SCOPE_PARAM = "criteria_scope"  # the searched criteria scope, when prune.criteria_scope lists more than one
BUDGET_PARAM = "budget"
BASIS_PARAM = "basis"
BASES = ("uniform", "ranked")
GLOBAL_BASELINE_CRITERIA = ("l1", "l2")  # Torch-Pruning's global pruning: magnitude importances
Distribution = tuple[Any, ...]


class BudgetedSpace(RankedSpace, Protocol):
    """What the budgeted space reads of a search space (``SearchSpace`` is one), so this module never imports it."""

    @property
    def budgets(self) -> tuple[float, ...]: ...

    @property
    def cost_of(self) -> Callable[[PruningPlan], float] | None: ...

    def criterion_param(self, group: str) -> str: ...

    def channels(self) -> dict[str, int]: ...


def positional_importances(channels: Mapping[str, int]) -> dict[str, tuple[float, ...]]:
    """Scores that make one global threshold a uniform ratio: the k-th channel of a group of n scores (k+1)/n."""
    return {name: tuple((k + 1) / count for k in range(count)) for name, count in channels.items()}


def budget_distributions(space: BudgetedSpace) -> dict[str, Distribution]:
    """Every searched param of a budgeted trial, in the order ``sample`` suggests them (the budget first)."""
    dists: dict[str, Distribution] = {
        BUDGET_PARAM: ("categorical", list(space.budgets)),
        BASIS_PARAM: ("categorical", list(BASES)),
    }
    for group in space.groups:
        if space.spec.ratio != "shared":
            dists.setdefault(space.scale_param(group), ("log_float", *space.spec.scale_range))
        criterion = space.criterion_param(group)
        dists.setdefault(criterion, ("categorical", list(space.criteria)))
    if len(space.scopes) > 1:
        dists[SCOPE_PARAM] = ("categorical", list(space.scopes))
    return dists


def projected_entries(space: BudgetedSpace, params: Mapping[str, Any]) -> dict[str, tuple[float, str]]:
    """Each group's (ratio, criterion): the params' allocation projected onto their budget. With tied layers
    (``prune.tie: [layers]``) the threshold runs over tied knobs, so every layer of a type keeps as many channels."""
    if space.cost_of is None:
        raise ConfigError("a budgeted space needs cost_of(plan) -> relative cost to project plans", key="study.search")
    cost_of = space.cost_of
    budget, basis = float(params[BUDGET_PARAM]), str(params[BASIS_PARAM])
    scope = space.scope_of(params)
    criteria = {group: space.criterion_of(group, params) for group in space.groups}
    channels = space.channels()
    if basis == "uniform":
        scores: Mapping[str, Sequence[float]] = positional_importances(channels)
    else:
        scores = {group: space.importances[(criteria[group], scope)].groups[group] for group in space.groups}
    members = _tied_members(space, channels)
    units = {unit: _mean_sorted([scores[g] for g in groups]) for unit, groups in members.items()}

    def expand(plan: PruningPlan) -> PruningPlan:
        return PruningPlan(
            {g: (entry.ratio, criteria[g]) for unit, entry in plan.groups.items() for g in members[unit]},
            round_to=space.round_to,
            scope=scope,
        )

    try:
        plan = ranked_plan(
            units,
            {unit: criteria[groups[0]] for unit, groups in members.items()},
            macs=budget,
            macs_of=lambda unit_plan: cost_of(expand(unit_plan)),
            scales={unit: float(params.get(space.scale_param(groups[0]), 1.0)) for unit, groups in members.items()},
            bounds={unit: space.ratio_bounds(groups[0]) for unit, groups in members.items()},
            round_to=space.round_to,
            steps=_unit_steps(space.steps, members),
            scope=scope,
        )
    except ValueError as exc:
        raise ConfigError(f"budget {budget:g} cannot be reached: {exc}", key="study.budgets") from None
    return {group: (entry.ratio, entry.criterion) for group, entry in expand(plan).groups.items()}


def _unit_steps(steps: Mapping[str, Sequence[int]], members: Mapping[str, list[str]]) -> dict[str, tuple[int, ...]]:
    """A unit's allowed kept counts: those every member group allows (its width always is)."""
    units = {}
    for unit, groups in members.items():
        if all(g in steps for g in groups):
            units[unit] = tuple(sorted(set.intersection(*(set(steps[g]) for g in groups))))
    return units


def _tied_members(space: BudgetedSpace, channels: Mapping[str, int]) -> dict[str, list[str]]:
    """The units one threshold ranks: each group alone, or (tied layers) each tied knob's groups together, when
    they have as many channels."""
    if space.spec.ratio != "tied":
        return {group: [group] for group in space.groups}
    knobs: dict[str, list[str]] = {}
    for group in space.groups:
        knobs.setdefault(tied_knob(group), []).append(group)
    units: dict[str, list[str]] = {}
    for knob, groups in knobs.items():
        if len({channels[g] for g in groups}) == 1:
            units[knob] = groups
        else:  # repeated blocks of different widths: each keeps its own count
            units.update({g: [g] for g in groups})
    return units


def _mean_sorted(vectors: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The mean of each rank's score over equally long vectors (each sorted): a tied unit's channel scores."""
    ordered = [sorted(v) for v in vectors]
    return tuple(sum(v[i] for v in ordered) / len(ordered) for i in range(len(ordered[0])))


def baseline_name(basis: str, criterion: str) -> str:
    """A baseline's name as users write it (``study.baselines``): ``uniform-l2``, ``global-l1``."""
    return f"{'global' if basis == 'ranked' else basis}-{criterion}"


def baseline_criteria(criteria: Sequence[str], keep: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """The hand-picked baselines as (basis, criterion): uniform with each searched criterion, then global
    ranking with l1 and l2 (those searched; the first criterion when neither is). ``keep`` (``study.baselines``)
    names the ones to screen; None: all, in this order."""
    ranked = [c for c in GLOBAL_BASELINE_CRITERIA if c in criteria] or [criteria[0]]
    every = [("uniform", c) for c in criteria] + [("ranked", c) for c in ranked]
    if keep is None:
        return every
    return [pair for pair in every if baseline_name(*pair) in keep]


def baselines_by_priority(criteria: Sequence[str]) -> list[str]:
    """Every baseline's name, those a shrunk search keeps longest first: global then uniform ranking with l2,
    then l1, then uniform with the other criteria."""
    every = [baseline_name(*pair) for pair in baseline_criteria(criteria)]
    first = [f"{basis}-{c}" for c in ("l2", "l1") for basis in ("global", "uniform")]
    return [n for n in first if n in every] + [n for n in every if n not in first]


def baseline_params(space: BudgetedSpace, budget: float, keep: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The plans a user would try by hand at ``budget``, in this order: uniform with each searched criterion,
    then global ranking with l1 and l2 (those searched; the first criterion when neither is); ``keep``: only
    those named (``study.baselines``)."""
    dists = budget_distributions(space)
    baselines = []
    for basis, criterion in baseline_criteria(space.criteria, keep):
        params: dict[str, Any] = {}
        for name, (kind, *_) in dists.items():
            if name == BUDGET_PARAM:
                params[name] = budget
            elif name == BASIS_PARAM:
                params[name] = basis
            elif kind == "log_float":
                params[name] = 1.0
            elif name.startswith("criterion"):
                params[name] = criterion
            else:  # the searched scope: its first choice, as the warm start takes it
                params[name] = space.scopes[0]
        baselines.append(params)
    return baselines


def check_budgets(space: BudgetedSpace) -> None:
    """Every budget is reachable within the ratio bounds; else one ConfigError naming the first that is not."""
    if space.cost_of is None:
        raise ConfigError("a budgeted space needs cost_of(plan) -> relative cost", key="study.search")
    most = snap_plan(
        PruningPlan(
            {group: (space.ratio_bounds(group)[1], space.criteria[0]) for group in space.groups},
            round_to=space.round_to,
            scope=space.scopes[0],
        ),
        space.steps,
    )
    floor = space.cost_of(most)
    for budget in space.budgets:
        if budget < floor:
            raise ConfigError(
                f"budget {budget:g} cannot be reached: removing the most channels prune.ratio allows leaves "
                f"{floor:.4f} of the cost",
                key="study.budgets",
            )

