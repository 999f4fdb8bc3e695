"""The pruning plan: a frozen, JSON-serialisable value saying how much of each group to remove, and how.

The same plan applied to the same base weights gives the same pruned model, bit for bit; export, resume,
distributed workers and tests rely on that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from autoprune.criteria import CRITERIA
from autoprune.errors import ConfigError, did_you_mean

__all__ = [
    "GroupPlan",
    "PruningPlan",
    "SCOPES",
    "SPARSITY_METHODS",
    "Scope",
    "SparsityMethod",
    "SparsityPlan",
    "kept_channels",
    "summarize_plan",
]

Scope = Literal["layer", "group"]
SCOPES = ("layer", "group")
# torch.nn.utils.prune's methods: per-layer L1 or random amounts, or one L1 amount ranked across all layers.
SparsityMethod = Literal["l1_unstructured", "random_unstructured", "global"]
SPARSITY_METHODS: tuple[SparsityMethod, ...] = get_args(SparsityMethod)


def kept_channels(channels: int, ratio: float, round_to: int = 1) -> int:
    """Channels a group keeps: ``channels * (1 - ratio)`` rounded up to a multiple of ``round_to``.

    Never fewer than ``round_to`` (or one), never more than ``channels``.
    """
    # The small epsilon stops 10 * (1 - 0.7) = 3.0000000000000004 from rounding up to 4.
    keep = math.ceil(channels * (1.0 - ratio) / round_to - 1e-9) * round_to
    return max(min(keep, channels), min(round_to, channels), 1)


@dataclass(frozen=True)
class GroupPlan:
    ratio: float
    criterion: str

    def __post_init__(self) -> None:
        if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool):
            raise ConfigError(f"pruning ratio must be a number, found {self.ratio!r}")
        if not 0.0 <= float(self.ratio) < 1.0:
            raise ConfigError(f"pruning ratio must lie in [0, 1), found {self.ratio!r}")
        object.__setattr__(self, "ratio", float(self.ratio))
        CRITERIA.get(self.criterion)  # raises with the known names and a did-you-mean


@dataclass(frozen=True)
class SparsityPlan:
    """Unstructured pruning: the fraction of each layer's weights to zero, and the method that picks them.

    ``SparsityPlan("l1_unstructured", {"conv1": 0.8, "fc": 0.5})``. With ``global`` every layer carries the
    one amount, ranked across all of them (so layers end up with different sparsities).
    """

    method: str
    amounts: Mapping[str, float]

    def __init__(self, method: str, amounts: Mapping[str, float]) -> None:
        if method not in SPARSITY_METHODS:
            raise ConfigError(
                f"unknown unstructured method {method!r}{did_you_mean(str(method), SPARSITY_METHODS)}; "
                f"known: {', '.join(SPARSITY_METHODS)}"
            )
        checked: dict[str, float] = {}
        for layer, amount in amounts.items():
            if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0.0 <= float(amount) < 1.0:
                raise ConfigError(f"sparsity of layer {layer!r} must be a number in [0, 1), found {amount!r}")
            checked[str(layer)] = float(amount)
        if not checked:
            raise ConfigError("a sparsity plan needs at least one layer")
        if method == "global" and len(set(checked.values())) > 1:
            raise ConfigError(f"global sparsity ranks all layers together with one amount; found {sorted(set(checked.values()))}")
        object.__setattr__(self, "method", method)
        object.__setattr__(self, "amounts", _FrozenDict(checked))

    @property
    def amount(self) -> float:
        """The mean planned amount over layers (for ``global``, its one amount)."""
        return sum(self.amounts.values()) / len(self.amounts)

    def scaled(self, fraction: float) -> SparsityPlan:
        """The same plan at ``fraction`` of every amount: one step of a gradual schedule."""
        return SparsityPlan(self.method, {n: a * fraction for n, a in self.amounts.items()})

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "amounts": dict(self.amounts)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SparsityPlan:
        unknown = set(data) - {"method", "amounts"}
        if unknown:
            raise ConfigError(f"unknown sparsity plan keys {sorted(unknown)}; expected method, amounts")
        return cls(str(data.get("method")), dict(data.get("amounts", {})))

    def summary(self) -> str:
        if self.method == "global":
            return f"global sparsity {self.amount:.2f}"
        low, high = min(self.amounts.values()), max(self.amounts.values())
        name = self.method.removesuffix("_unstructured")
        if high - low < 1e-9:
            return f"{name} sparsity {low:.2f}"
        return f"{name} sparsity {low:.2f}-{high:.2f} (mean {self.amount:.2f})"

    def __hash__(self) -> int:
        return hash((self.method, tuple(sorted(self.amounts.items()))))


@dataclass(frozen=True)
class PruningPlan:
    """``PruningPlan({"layer1.0.conv1": (0.5, "l1"), ...}, round_to=1, scope="layer")``.

    Groups absent from the plan are left whole. ``scope`` says which weights a criterion scores: the group's
    root layer (``layer``, as in the papers and NNI) or every coupled layer (``group``, as DepGraph does).
    ``sparsity``, when given, zeroes single weights of what the channel pruning leaves (unstructured pruning).
    """

    groups: Mapping[str, GroupPlan] = field(default_factory=dict)
    round_to: int = 1
    scope: Scope = "layer"
    sparsity: SparsityPlan | None = None

    def __init__(
        self,
        groups: Mapping[str, GroupPlan | tuple[float, str] | list[Any]] | None = None,
        round_to: int = 1,
        scope: Scope = "layer",
        sparsity: SparsityPlan | None = None,
    ) -> None:
        items: dict[str, GroupPlan] = {}
        for name, value in (groups or {}).items():
            if isinstance(value, GroupPlan):
                items[str(name)] = value
            elif isinstance(value, (tuple, list)) and len(value) == 2:
                items[str(name)] = GroupPlan(value[0], value[1])
            else:
                raise ConfigError(f"plan entry for group {name!r} must be (ratio, criterion), found {value!r}")
        if not isinstance(round_to, int) or isinstance(round_to, bool) or round_to < 1:
            raise ConfigError(f"round_to must be a positive integer, found {round_to!r}")
        if scope not in SCOPES:
            raise ConfigError(f"criteria scope must be one of {', '.join(SCOPES)}, found {scope!r}")
        if sparsity is not None and not isinstance(sparsity, SparsityPlan):
            raise ConfigError(f"sparsity must be a SparsityPlan, found {type(sparsity).__name__}")
        object.__setattr__(self, "groups", _FrozenDict(items))
        object.__setattr__(self, "round_to", round_to)
        object.__setattr__(self, "scope", scope)
        object.__setattr__(self, "sparsity", sparsity)

    @classmethod
    def uniform(
        cls, groups: Iterable[Any], ratio: float, criterion: str = "l1", round_to: int = 1, scope: Scope = "layer"
    ) -> PruningPlan:
        """The same ratio and criterion for every group (``groups``: Group objects or names)."""
        names = [g if isinstance(g, str) else g.name for g in groups]
        return cls({n: (ratio, criterion) for n in names}, round_to=round_to, scope=scope)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "groups": {n: {"ratio": g.ratio, "criterion": g.criterion} for n, g in self.groups.items()},
            "round_to": self.round_to,
            "scope": self.scope,
        }
        if self.sparsity is not None:  # absent, not null: a structured plan's JSON (and seeds) stay as they were
            data["sparsity"] = self.sparsity.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        unknown = set(data) - {"groups", "round_to", "scope", "sparsity"}
        if unknown:
            raise ConfigError(f"unknown plan keys {sorted(unknown)}; expected groups, round_to, scope, sparsity")
        groups = {n: (g["ratio"], g["criterion"]) for n, g in dict(data.get("groups", {})).items()}
        sparsity = SparsityPlan.from_dict(data["sparsity"]) if data.get("sparsity") is not None else None
        return cls(groups, round_to=int(data.get("round_to", 1)), scope=data.get("scope", "layer"), sparsity=sparsity)

    def structured(self) -> PruningPlan:
        """This plan without its sparsity: the channel pruning alone."""
        return PruningPlan(self.groups, round_to=self.round_to, scope=self.scope)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PruningPlan:
        return cls.from_dict(json.loads(text))

    def summary(self) -> str:
        """A short text such as ``ratio 0.10-0.80 (mean 0.45); fpgm:3 l1:6``, for tables."""
        return summarize_plan(
            {n: (g.ratio, g.criterion) for n, g in self.groups.items()},
            self.sparsity.summary() if self.sparsity is not None else "",
        )


def summarize_plan(entries: Mapping[str, tuple[float, str]], sparsity: str = "") -> str:
    """Summarise ``{group: (ratio, criterion)}`` (and a sparsity summary) in one short line."""
    if not entries:
        return sparsity or "unpruned"
    if sparsity:
        return f"{summarize_plan(entries)}; {sparsity}"
    ratios = [ratio for ratio, _ in entries.values()]
    counts: dict[str, int] = {}
    for _, criterion in entries.values():
        counts[criterion] = counts.get(criterion, 0) + 1
    criteria = " ".join(f"{name}:{n}" for name, n in sorted(counts.items()))
    if max(ratios) - min(ratios) < 1e-9:
        return f"uniform {ratios[0]:.2f}; {criteria}"
    return f"ratio {min(ratios):.2f}-{max(ratios):.2f} (mean {sum(ratios) / len(ratios):.2f}); {criteria}"


class _FrozenDict(dict[Any, Any]):
    """A dict that refuses mutation, so a plan stays a value; it still pickles and copies like one.

    A dict subclass (not a ``MappingProxyType``) so that plans keep hashing, comparing equal to plain dicts and
    serialising as before. Pickle and ``copy`` would rebuild it item by item through ``__setitem__``;
    ``__reduce__`` hands them the finished contents instead.
    """

    def _refuse(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("a plan is immutable; build a new PruningPlan (or SparsityPlan) instead")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (dict(self),))

    def __copy__(self) -> _FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _FrozenDict:
        # Keys are strings, values frozen GroupPlans or floats: nothing inside can change, so the copy is itself.
        return self

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))
