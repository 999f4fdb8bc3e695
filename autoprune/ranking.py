"""Global channel ranking, in numbers alone: one threshold over per-group normalised importances.

Torch-Pruning's ``global_pruning=True`` ranks every channel of every group together, after dividing each group's
importances by their mean (its ``normalizer``), and removes the lowest ones across the model. Inside one group
the normaliser (and a positive scale factor, LeGR's per-stage knob) keeps the order of the raw scores, so the
global ranking comes down to a number of channels per group; a :class:`~autoprune.plan.PruningPlan` with that
ratio and the same criterion and scope removes exactly the globally ranked channels.

Nothing here touches a model: the engine scores channels (``autoprune.engine.channel_importances``), the search
space turns importances and its knobs into plans (``search_space: global_rank``), both through these functions.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoprune._registry import Registry
from autoprune.plan import PruningPlan, Scope, kept_channels

__all__ = [
    "NORMALIZERS",
    "ChannelImportances",
    "ChannelSteps",
    "ChannelRanking",
    "normalize",
    "plan_from_kept",
    "ranked_plan",
    "ratio_for_kept",
    "removal_limits",
    "removed_for_ratio",
    "snap_plan",
    "snap_up",
    "snapped",
]

Normalizer = Callable[[list[float]], list[float]]
NORMALIZERS: Registry[Normalizer] = Registry("importance normalizer")


def _divided(scores: list[float], by: float) -> list[float]:
    # A group whose scores are all zero (dead channels) stays at zero: first to go, and no division by zero.
    return [x / by for x in scores] if by > 0 else list(scores)


@NORMALIZERS.register("mean")
def _mean(scores: list[float]) -> list[float]:
    """Torch-Pruning's default: each score over the group's mean."""
    return _divided(scores, sum(scores) / len(scores))


@NORMALIZERS.register("max")
def _max(scores: list[float]) -> list[float]:
    return _divided(scores, max(scores))


@NORMALIZERS.register("sum")
def _sum(scores: list[float]) -> list[float]:
    return _divided(scores, sum(scores))


@NORMALIZERS.register("standardization")
def _standardization(scores: list[float]) -> list[float]:
    """(x - min) / (max - min): every group's weakest channel at 0, its strongest at 1."""
    low = min(scores)
    return _divided([x - low for x in scores], max(scores) - low)


@NORMALIZERS.register("none")
def _none(scores: list[float]) -> list[float]:
    return list(scores)


def normalize(scores: Sequence[float], normalizer: str = "mean", power: float = 1.0) -> tuple[float, ...]:
    """``scores ** power``, normalised per group. Both keep the group's order (``power > 0``).

    Torch-Pruning's ``GroupMagnitudeImportance(p=2)`` ranks the *squared* L2 norm: criterion ``l2`` with
    ``power=2`` ranks as it does (``l1``, ``p=1``: ``power=1``).
    """
    if not power > 0:
        raise ValueError(f"power must be positive, found {power!r}")
    values = [float(x) for x in scores]
    if not values:
        raise ValueError("a group has no channel to normalise")
    if power != 1.0:
        if min(values) < 0:
            raise ValueError(f"power {power} needs non-negative scores; found {min(values)}")
        values = [x**power for x in values]
    return tuple(NORMALIZERS.get(normalizer)(values))


@dataclass(frozen=True)
class ChannelImportances:
    """Per-group normalised importances of one model's channels, for one criterion and scope.

    ``groups[name][c]`` is channel ``c``'s score in group ``name`` (in model order), comparable across groups.
    Computed once on the base model (``autoprune.engine.channel_importances``); a plain value.
    """

    criterion: str
    scope: Scope
    groups: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    normalizer: str = "mean"
    power: float = 1.0

    @property
    def channels(self) -> dict[str, int]:
        return {name: len(scores) for name, scores in self.groups.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "scope": self.scope,
            "normalizer": self.normalizer,
            "power": self.power,
            "groups": {name: list(scores) for name, scores in self.groups.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChannelImportances:
        groups = {str(n): tuple(float(x) for x in s) for n, s in dict(data["groups"]).items()}
        return cls(data["criterion"], data["scope"], groups, data.get("normalizer", "mean"), float(data.get("power", 1.0)))


def removal_limits(
    channels: Mapping[str, int], bounds: Mapping[str, tuple[float, float]] | tuple[float, float], round_to: int = 1
) -> dict[str, tuple[int, int]]:
    """Per group, the fewest and the most channels a ranking may remove: those of the ratio bounds ``(low, high)``
    (one pair for all groups, or one per group), as :func:`~autoprune.plan.kept_channels` counts them."""
    limits = {}
    for name, count in channels.items():
        low, high = bounds[name] if isinstance(bounds, Mapping) else bounds
        limits[name] = (count - kept_channels(count, low, round_to), count - kept_channels(count, high, round_to))
    return limits


def removed_for_ratio(total: int, ratio: float) -> int:
    """Channels a global ``ratio`` removes of ``total``, as Torch-Pruning counts them: ``total - int(total * (1 -
    ratio))`` (the epsilon stops ``10 * (1 - 0.7) = 2.9999999999999996`` from keeping 2)."""
    return total - math.floor(total * (1.0 - ratio) + 1e-9)


class ChannelRanking:
    """Every channel of every group in one order, lowest (scaled, normalised) importance first.

    Ties go to the earlier group, then to the lower channel index, as :func:`autoprune.engine.select_removed`
    breaks them inside a group; so the first ``n`` channels hold, per group, that group's own lowest scores.
    ``scales`` multiplies each group's importances (LeGR's per-stage factors; 1 when absent); ``limits`` are
    per-group (fewest, most) channels removed: the fewest go first, whatever their rank, and a group at its most
    is skipped.
    """

    def __init__(
        self,
        importances: Mapping[str, Sequence[float]],
        scales: Mapping[str, float] | None = None,
        limits: Mapping[str, tuple[int, int]] | None = None,
    ) -> None:
        self.channels = {name: len(scores) for name, scores in importances.items()}
        self.limits = {name: (limits or {}).get(name, (0, count)) for name, count in self.channels.items()}
        candidates: list[tuple[float, int, int]] = []
        self._orders: dict[str, list[int]] = {}
        for index, (name, scores) in enumerate(importances.items()):
            scale = float((scales or {}).get(name, 1.0))
            if not scale > 0:
                raise ValueError(f"group {name!r}: scale factor must be positive, found {scale!r}")
            order = sorted(range(len(scores)), key=lambda c: (float(scores[c]), c))  # noqa: B023  (used at once)
            self._orders[name] = order
            fewest, most = self.limits[name]
            if not 0 <= fewest <= most <= len(scores):
                raise ValueError(f"group {name!r}: removal limits {fewest}..{most} do not fit its {len(scores)} channels")
            candidates.extend((scale * float(scores[order[p]]), index, p) for p in range(fewest, most))
        candidates.sort()
        self._names = list(importances)
        self._ranked = [(self._names[index], p) for _, index, p in candidates]

    @property
    def fewest(self) -> int:
        return sum(lo for lo, _ in self.limits.values())

    @property
    def most(self) -> int:
        return sum(hi for _, hi in self.limits.values())

    @property
    def total(self) -> int:
        return sum(self.channels.values())

    def kept(self, remove: int) -> dict[str, int]:
        """Channels each group keeps when ``remove`` channels go in all (between :attr:`fewest` and :attr:`most`)."""
        if not self.fewest <= remove <= self.most:
            raise ValueError(f"can remove between {self.fewest} and {self.most} channels within the limits, asked {remove}")
        removed = {name: lo for name, (lo, _) in self.limits.items()}
        for name, _ in self._ranked[: remove - self.fewest]:
            removed[name] += 1
        return {name: self.channels[name] - removed[name] for name in self.channels}

    def removed_channels(self, remove: int) -> dict[str, list[int]]:
        """The channel indices each group loses when ``remove`` channels go, sorted."""
        return {
            name: sorted(self._orders[name][: self.channels[name] - keep]) for name, keep in self.kept(remove).items()
        }


ChannelSteps = Mapping[str, Sequence[int]]  # group -> the kept counts allowed (ascending, ending at its width)


def snap_up(kept: int, allowed: Sequence[int]) -> int:
    """The smallest of ``allowed`` (ascending) that is at least ``kept``; the largest when none is."""
    index = bisect_left(allowed, kept)
    return allowed[min(index, len(allowed) - 1)]


def snapped(kept: Mapping[str, int], steps: ChannelSteps | None) -> dict[str, int]:
    """``kept`` with each group's count raised to its next allowed step (groups without steps unchanged)."""
    return {name: snap_up(count, steps[name]) if steps and name in steps else count for name, count in kept.items()}


def snap_plan(plan: PruningPlan, steps: ChannelSteps | None) -> PruningPlan:
    """``plan`` with each group's kept count raised to its next allowed step (a group's width is its last step)."""
    if not steps:
        return plan
    groups = {}
    for name, entry in plan.groups.items():
        ratio = entry.ratio
        if name in steps:
            width = steps[name][-1]
            ratio = ratio_for_kept(width, snap_up(kept_channels(width, ratio, plan.round_to), steps[name]), plan.round_to)
        groups[name] = (ratio, entry.criterion)
    return PruningPlan(groups, round_to=plan.round_to, scope=plan.scope, sparsity=plan.sparsity)


def ratio_for_kept(channels: int, kept: int, round_to: int = 1) -> float:
    """The plan ratio whose :func:`~autoprune.plan.kept_channels` is ``kept`` rounded up to a multiple of
    ``round_to`` (as the plan itself rounds); exact, checked."""
    target = min(max(-(-kept // round_to) * round_to, min(round_to, channels), 1), channels)
    ratio = 1.0 - target / channels
    for _ in range(4):  # 1 - k / n is off by an ulp at most; step until kept_channels agrees
        found = kept_channels(channels, ratio, round_to)
        if found == target:
            return max(ratio, 0.0)
        ratio = math.nextafter(ratio, 1.0 if found > target else 0.0)
    raise ValueError(f"no ratio keeps {target} of {channels} channels with round_to {round_to}")


def plan_from_kept(
    kept: Mapping[str, int],
    channels: Mapping[str, int],
    criteria: Mapping[str, str] | str,
    *,
    round_to: int = 1,
    scope: Scope = "layer",
) -> PruningPlan:
    """A plan keeping ``kept[g]`` channels of each group (rounded up to ``round_to``) with its criterion."""
    return PruningPlan(
        {
            name: (ratio_for_kept(channels[name], keep, round_to), criteria if isinstance(criteria, str) else criteria[name])
            for name, keep in kept.items()
        },
        round_to=round_to,
        scope=scope,
    )


def ranked_plan(
    importances: Mapping[str, Sequence[float]],
    criteria: Mapping[str, str] | str,
    *,
    ratio: float | None = None,
    macs: float | None = None,
    macs_of: Callable[[PruningPlan], float] | None = None,
    scales: Mapping[str, float] | None = None,
    bounds: Mapping[str, tuple[float, float]] | tuple[float, float] = (0.0, 0.9),
    round_to: int = 1,
    steps: ChannelSteps | None = None,
    scope: Scope = "layer",
    strict: bool = True,
) -> PruningPlan:
    """The plan of one global threshold over ``importances`` (normalised, per group), meeting one target:

    - ``ratio``: remove that fraction of all channels (Torch-Pruning's count), the lowest first;
    - ``macs``: the fewest channels whose plan has relative MACs ``macs_of(plan) <= macs`` (bisection on the
      number removed; MACs never rise as it grows), so one channel fewer would miss the target.

    Each group removes between the counts of its ratio ``bounds``; then its kept count is rounded up to
    ``round_to``, or raised to its next allowed count in ``steps`` (``prune.round_to: auto``). A target out of
    reach within the bounds is a ValueError, or with ``strict=False`` the nearest reachable plan."""
    if (ratio is None) == (macs is None):
        raise ValueError("give exactly one target: ratio or macs")
    channels = {name: len(scores) for name, scores in importances.items()}
    ranking = ChannelRanking(importances, scales, removal_limits(channels, bounds, round_to))

    def plan(remove: int) -> PruningPlan:
        return plan_from_kept(snapped(ranking.kept(remove), steps), channels, criteria, round_to=round_to, scope=scope)

    if ratio is not None:
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"ratio must lie in [0, 1), found {ratio!r}")
        remove = removed_for_ratio(ranking.total, ratio)
        if strict and not ranking.fewest <= remove <= ranking.most:
            raise ValueError(
                f"a global ratio of {ratio} removes {remove} of {ranking.total} channels; the per-group ratio bounds "
                f"allow {ranking.fewest} to {ranking.most}"
            )
        return plan(min(max(remove, ranking.fewest), ranking.most))
    if macs is None or macs_of is None:  # macs is set: exactly one target was checked above
        raise ValueError("a MACs target needs macs_of(plan) -> relative MACs")
    target_macs, count_macs = macs, macs_of
    measured: dict[int, float] = {}

    def macs_at(remove: int) -> float:
        if remove not in measured:
            measured[remove] = count_macs(plan(remove))
        return measured[remove]

    low, high = ranking.fewest, ranking.most
    if macs_at(high) > target_macs:
        if strict:
            raise ValueError(
                f"MACs target {target_macs} is out of reach: removing the most channels the ratio bounds allow leaves "
                f"{measured[high]:.4f} of the MACs"
            )
        return plan(high)
    return plan(_fewest_meeting(low, high, macs_at, target_macs))


def _fewest_meeting(low: int, high: int, macs_at: Callable[[int], float], target: float) -> int:
    """The smallest count in ``[low, high]`` whose MACs are at most ``target`` (``macs_at(high)`` is), MACs never
    rising with the count.

    Each measure prunes and counts a model, so the guesses interpolate (regula falsi, Illinois variant) on the
    square root of the MACs, nearly linear in the channels removed (a conv's MACs scale with its input times its
    output channels): a few measures instead of a bisection's ~log2(channels). Every guess lies strictly inside
    the bracket, so it ends.
    """
    if macs_at(low) <= target:
        return low
    aim = math.sqrt(target)
    above, below = math.sqrt(macs_at(low)) - aim, math.sqrt(macs_at(high)) - aim  # > 0 at low, <= 0 at high
    last_side = ""
    while high - low > 1:
        fraction = above / (above - below) if above > below else 0.5
        guess = min(max(low + math.ceil(fraction * (high - low) - 1e-9), low + 1), high - 1)
        value = math.sqrt(macs_at(guess)) - aim
        if value <= 0:
            high, below, side = guess, value, "high"
            if last_side == side:
                above /= 2  # Illinois: the other end has not moved twice running; pull the guess towards it
        else:
            low, above, side = guess, value, "low"
            if last_side == side:
                below /= 2
        last_side = side
    return high
