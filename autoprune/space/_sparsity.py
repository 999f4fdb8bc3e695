"""The unstructured half of the search space: a ``torch.nn.utils.prune`` method, and how much of each layer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from autoprune.plan import SparsityPlan
from autoprune.space._tie import tied_knob

__all__ = ["GLOBAL_PARAM", "METHOD_PARAM", "SPARSITY_BASELINES", "SparsitySpace"]

METHOD_PARAM = "sparsity_method"
GLOBAL_PARAM = "global_sparsity"  # the one amount of the global method
SPARSITY_BASELINES = (0.5, 0.75, 0.9)  # uniform amounts queued first, one trial per method each


class _Trial(Protocol):
    def suggest_float(self, name: str, low: float, high: float) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SparsitySpace:
    """``sparsity_method`` (categorical), then ``global_sparsity`` for ``global``, else one ``sparsity:<knob>``
    per layer, per stage (``stage_depth`` name components) or shared, as the preset's ratio granularity says."""

    layers: tuple[str, ...]
    bounds: tuple[float, float]
    methods: tuple[str, ...]
    granularity: str = "per_group"
    stage_depth: int = 1

    def knob(self, layer: str) -> str:
        if self.granularity == "shared":
            return "sparsity"
        if self.granularity == "per_stage":
            return "sparsity:" + ".".join(layer.split(".")[: self.stage_depth])
        if self.granularity == "tied":
            return f"sparsity:{tied_knob(layer)}"
        return f"sparsity:{layer}"

    def sample(self, trial: _Trial) -> SparsityPlan:
        method = trial.suggest_categorical(METHOD_PARAM, list(self.methods))
        if method == "global":
            amount = trial.suggest_float(GLOBAL_PARAM, *self.bounds)
            return SparsityPlan(method, {layer: amount for layer in self.layers})
        return SparsityPlan(method, {layer: trial.suggest_float(self.knob(layer), *self.bounds) for layer in self.layers})

    def from_params(self, params: Mapping[str, Any]) -> SparsityPlan:
        method = str(params[METHOD_PARAM])
        if method == "global":
            return SparsityPlan(method, {layer: float(params[GLOBAL_PARAM]) for layer in self.layers})
        return SparsityPlan(method, {layer: float(params[self.knob(layer)]) for layer in self.layers})

    def uniform_params(self, amount: float, method: str) -> dict[str, Any]:
        amount = min(max(amount, self.bounds[0]), self.bounds[1])
        if method == "global":
            return {METHOD_PARAM: method, GLOBAL_PARAM: amount}
        return {METHOD_PARAM: method, **{self.knob(layer): amount for layer in self.layers}}

    def warm_start(self) -> list[dict[str, Any]]:
        """Uniform amounts 0.5 / 0.75 / 0.9 (clamped into the bounds) with each searched method."""
        baselines: list[dict[str, Any]] = []
        for amount in SPARSITY_BASELINES:
            for method in self.methods:
                params = self.uniform_params(amount, method)
                if params not in baselines:
                    baselines.append(params)
        return baselines
