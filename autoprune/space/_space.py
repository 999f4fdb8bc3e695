from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from autoprune.config import SpaceSpec
from autoprune.errors import ConfigError
from autoprune.plan import PruningPlan, Scope
from autoprune.space._sparsity import SparsitySpace

__all__ = ["SearchSpace", "TrialLike", "UNIFORM_BASELINES"]

UNIFORM_BASELINES = (0.25, 0.5, 0.75)
BASELINE_CRITERIA = ("l1", "l2", "fpgm")


class TrialLike(Protocol):
    def suggest_float(self, name: str, low: float, high: float) -> float: ...

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any: ...


@dataclass(frozen=True)
class SearchSpace:
    """Turns a trial into a plan. The only place in autoprune that calls ``trial.suggest_*``.

    ``groups`` are the structured half (empty: no channel is removed); ``sparsity``, when given, the
    unstructured half, sampled after it.
    """

    spec: SpaceSpec
    groups: tuple[str, ...]  # group names, model order
    ratio: tuple[float, float]
    criteria: tuple[str, ...]
    round_to: int = 1
    scope: Scope = "layer"
    # Per-group ratio bounds (from an NNI config_list); groups absent here use ``ratio``.
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    sparsity: SparsitySpace | None = None

    def __post_init__(self) -> None:
        knobs: dict[str, tuple[str, tuple[float, float]]] = {}
        for group in self.groups:
            knob = self._param("ratio", self._knob(group, self.spec.ratio))
            seen = knobs.setdefault(knob, (group, self.ratio_bounds(group)))
            if seen[1] != self.ratio_bounds(group):
                raise ConfigError(
                    f"groups {seen[0]!r} and {group!r} share the searched ratio {knob!r} but have different bounds "
                    f"{list(seen[1])} and {list(self.ratio_bounds(group))}; use search_space: per_layer",
                    key="prune.nni_config_list",
                )

    def ratio_bounds(self, group: str) -> tuple[float, float]:
        lo, hi = self.bounds.get(group, self.ratio)
        return float(lo), float(hi)

    def _knob(self, group: str, granularity: str) -> str:
        if granularity == "shared":
            return ""
        if granularity == "per_stage":
            return ".".join(group.split(".")[: self.spec.stage_depth])
        return group

    @staticmethod
    def _param(kind: str, knob: str) -> str:
        return f"{kind}:{knob}" if knob else kind

    def param_names(self) -> list[str]:
        names: list[str] = []
        for group in self.groups:
            for kind, granularity in (("ratio", self.spec.ratio), ("criterion", self.spec.criterion)):
                name = self._param(kind, self._knob(group, granularity))
                if name not in names:
                    names.append(name)
        return names

    def sample(self, trial: TrialLike) -> PruningPlan:
        entries: dict[str, tuple[float, str]] = {}
        for group in self.groups:
            ratio_name = self._param("ratio", self._knob(group, self.spec.ratio))
            criterion_name = self._param("criterion", self._knob(group, self.spec.criterion))
            ratio = trial.suggest_float(ratio_name, *self.ratio_bounds(group))
            criterion = trial.suggest_categorical(criterion_name, list(self.criteria))
            entries[group] = (ratio, criterion)
        sparsity = self.sparsity.sample(trial) if self.sparsity is not None else None
        return PruningPlan(entries, round_to=self.round_to, scope=self.scope, sparsity=sparsity)

    def plan_from_params(self, params: dict[str, Any]) -> PruningPlan:
        """The plan a finished trial's params describe (the same one ``sample`` built)."""
        entries = {
            group: (
                float(params[self._param("ratio", self._knob(group, self.spec.ratio))]),
                str(params[self._param("criterion", self._knob(group, self.spec.criterion))]),
            )
            for group in self.groups
        }
        sparsity = self.sparsity.from_params(params) if self.sparsity is not None else None
        return PruningPlan(entries, round_to=self.round_to, scope=self.scope, sparsity=sparsity)

    def _knob_bounds(self) -> dict[str, tuple[float, float]]:
        return {self._param("ratio", self._knob(g, self.spec.ratio)): self.ratio_bounds(g) for g in self.groups}

    def uniform_params(self, ratio: float, criterion: str) -> dict[str, Any]:
        """Every ratio knob at ``ratio`` (clamped into its own bounds), every criterion knob at ``criterion``."""
        bounds = self._knob_bounds()
        return {
            name: (min(max(ratio, bounds[name][0]), bounds[name][1]) if name.startswith("ratio") else criterion)
            for name in self.param_names()
        }

    def warm_start(self) -> list[dict[str, Any]]:
        """Uniform baselines (0.25 / 0.5 / 0.75 with l1, l2, fpgm) that fit inside some group's bounds.

        Without groups, the sparsity baselines instead (uniform amounts with each method); with both halves,
        the structured baselines, their sparsity left to the sampler.
        """
        if not self.spec.warm_start:
            return []
        if not self.groups:
            return self.sparsity.warm_start() if self.sparsity is not None else []
        knob_bounds = self._knob_bounds().values()
        baselines: list[dict[str, Any]] = []
        for ratio in UNIFORM_BASELINES:
            if not any(lo <= ratio <= hi for lo, hi in knob_bounds):
                continue
            for criterion in BASELINE_CRITERIA:
                params = self.uniform_params(ratio, criterion)
                if criterion in self.criteria and params not in baselines:
                    baselines.append(params)
        return baselines
