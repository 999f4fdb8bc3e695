"""The attention adapter contract, the registry and the head-layout arithmetic every adapter shares.

An adapter stands for one attention module. It owns the output channels of the projections that produce heads
(q, k, v): DepGraph's own groups rooted there are never enumerated, because its index mapping through the
reshape into heads (and, in Llama, through the rotary embedding) is wrong, and on a Llama it takes minutes.
Instead the adapter names up to two groups: head dims (the same positions in every head, named by the query
projection) and whole heads (``<query>#heads``), and computes their indices from the head layout, as
torch-pruning's ``num_heads`` support does in its MetaPruner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import torch
from torch import nn

from autoprune._registry import Registry

__all__ = [
    "ATTENTION_ADAPTERS",
    "ENTRY_POINT_GROUP",
    "HEADS_SUFFIX",
    "AttentionAdapter",
    "Projection",
    "int_attribute",
    "register_attention_adapter",
    "set_int_attribute",
]

HEADS_SUFFIX = "#heads"
ENTRY_POINT_GROUP = "autoprune.attention_adapters"  # installed packages add adapters: name = "pkg.module:Class"


def int_attribute(module: nn.Module, name: str) -> int | None:
    """``module.name`` when it is a plain int (not a bool), else None."""
    value: Any = getattr(module, name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def set_int_attribute(module: nn.Module, name: str, value: int) -> None:
    """Set a plain int attribute (torch types Module attributes as Tensor | Module, hence the helper)."""
    setattr(module, name, value)


@dataclass(frozen=True)
class Projection:
    """One linear of an attention, seen along the axis that carries the heads.

    Along that axis the channels are laid out as ``[parts, units, per_unit, head_dim]``: ``parts`` packed
    projections (timm's ``qkv`` holds q, k and v: 3), ``units`` pruning units (heads; KV heads under
    grouped-query attention), ``per_unit`` heads per unit (a GQA query projection: the query heads that share
    one KV head), ``head_dim`` positions per head.
    """

    name: str
    linear: nn.Linear
    axis: str  # "out": q, k, v (heads are output rows); "in": the output projection (heads are input columns)
    parts: int = 1
    per_unit: int = 1
    interleaved: bool = False

    def blocks(self, units: int, head_dim: int, weight: torch.Tensor | None = None) -> torch.Tensor:
        """The weight as ``[parts, units, per_unit, head_dim, features]``."""
        w = self.linear.weight if weight is None else weight
        w = w.detach() if self.axis == "out" else w.detach().t()
        if self.interleaved:
            return w.reshape(units, self.parts, self.per_unit, head_dim, -1).transpose(0, 1)
        return w.reshape(self.parts, units, self.per_unit, head_dim, -1)

    def indices(self, unit: str, remove: Sequence[int], units: int, head_dim: int) -> list[int]:
        """The channels along the axis that removing ``remove`` (heads, or head-dim positions) takes away."""
        removed = set(remove)
        found = []
        for part in range(self.parts):
            for u in range(units):
                for p in range(self.per_unit):
                    for i in range(head_dim):
                        if (u if unit == "heads" else i) in removed:
                            block = u * self.parts + part if self.interleaved else part * units + u
                            found.append((block * self.per_unit + p) * head_dim + i)
        return sorted(found)


class AttentionAdapter(ABC):
    """One attention module whose heads an adapter knows how to prune.

    Subclasses implement :meth:`match` (recognise the module by its structure and read its head layout) and
    :meth:`update_module` (keep every attribute the module's forward reads consistent after pruning). Set
    ``unsupported`` to a reason when the module's heads cannot be pruned in place: its ``#heads`` group is then
    reported by name and left out, never half pruned. ``heads_unsupported`` does so for whole heads alone (T5:
    a position bias shared by every layer's heads), while head dims are still pruned. Per-head tables that the
    module holds besides its linears (Swin's relative position bias) follow in :meth:`prune_tables`.
    """

    style: ClassVar[str] = ""
    head_dims_sound: bool = True  # whether head dims may be pruned (an adapter may decide per module)
    unsupported: str | None = None
    heads_unsupported: str | None = None  # why whole heads cannot be removed (head dims still can)

    def __init__(
        self, owner_name: str, owner: nn.Module, projections: Sequence[Projection], units: int, head_dim: int
    ) -> None:
        self.owner_name = owner_name
        self.owner = owner
        self.projections = tuple(projections)
        self.units = units
        self.head_dim = head_dim

    @classmethod
    @abstractmethod
    def match(cls, name: str, module: nn.Module, modules: Mapping[str, nn.Module]) -> AttentionAdapter | None:
        """An adapter for ``module`` (named ``name``; ``modules`` are the model's, by name) or None."""

    @abstractmethod
    def update_module(self, unit: str, removed: int) -> None:
        """After ``removed`` units (``heads`` or ``dims``) went, set the module's own attributes to match."""

    # -- names ---------------------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The head-dims group: the query projection's qualified name (the owner's, without projections)."""
        return self.projections[0].name if self.projections else self.owner_name

    @property
    def heads_name(self) -> str:
        return self.name + HEADS_SUFFIX

    @property
    def root(self) -> nn.Module:
        return self.projections[0].linear if self.projections else self.owner

    @property
    def claimed(self) -> tuple[nn.Linear, ...]:
        """The linears whose output channels are heads: no DepGraph group is rooted there."""
        return tuple(p.linear for p in self.projections if p.axis == "out")

    @property
    def members(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.name for p in self.projections)) or (self.owner_name,)

    @property
    def kind(self) -> str:
        return type(self.owner).__name__

    def channels(self, unit: str) -> int:
        return self.units if unit == "heads" else self.head_dim

    # -- scoring and pruning -------------------------------------------------------------------------------

    def rows(self, unit: str, scope: str) -> torch.Tensor:
        """One row per unit (``dims``: head-dim position, ``heads``: head): the query projection's weights
        (scope ``layer``) or every projection's (``group``)."""
        return self._rows(unit, scope, [p.linear.weight for p in self.projections])

    def grad_rows(self, unit: str, scope: str) -> torch.Tensor | None:
        """:meth:`rows` of the weights' ``.grad``; None when a weight has none."""
        grads = [p.linear.weight.grad for p in self.projections]
        return None if any(g is None for g in grads) else self._rows(unit, scope, cast(list[torch.Tensor], grads))

    def _rows(self, unit: str, scope: str, weights: list[torch.Tensor]) -> torch.Tensor:
        blocks = []
        for proj, weight in list(zip(self.projections, weights, strict=True))[: 1 if scope == "layer" else None]:
            b = proj.blocks(self.units, self.head_dim, weight)
            blocks.append((b.permute(3, 0, 1, 2, 4) if unit == "dims" else b.permute(1, 0, 2, 3, 4)).flatten(1))
        return torch.cat(blocks, dim=1).clone().float()

    def prune_indices(self, unit: str, remove: Sequence[int]) -> list[tuple[Projection, list[int]]]:
        """For each projection, the channels along its head axis that removing ``remove`` units takes away."""
        return [(p, p.indices(unit, remove, self.units, self.head_dim)) for p in self.projections]

    def prune_tables(self, unit: str, remove: Sequence[int]) -> None:
        """Remove ``remove`` units from per-head tables the module holds besides its linears (none by default)."""
        return None

    def after_pruning(self, unit: str, removed: int) -> None:
        if unit == "heads":
            self.units -= removed
        else:
            self.head_dim -= removed
        self.update_module(unit, removed)


def _check_adapter(name: str, obj: object) -> None:
    if not (isinstance(obj, type) and issubclass(obj, AttentionAdapter)):
        raise TypeError(f"expected an AttentionAdapter subclass, got {obj!r}")
    if not obj.style:
        obj.style = name


ATTENTION_ADAPTERS: Registry[type[AttentionAdapter]] = Registry(
    "attention adapter", entry_point_group=ENTRY_POINT_GROUP, check=_check_adapter
)


def register_attention_adapter(name: str) -> Callable[[type[AttentionAdapter]], type[AttentionAdapter]]:
    """Class decorator: try ``cls.match`` on every module of a model whose groups are enumerated."""

    def decorator(cls: type[AttentionAdapter]) -> type[AttentionAdapter]:
        if not (isinstance(cls, type) and issubclass(cls, AttentionAdapter)):
            raise TypeError(f"register_attention_adapter({name!r}) expects an AttentionAdapter subclass, got {cls!r}")
        cls.style = name
        return ATTENTION_ADAPTERS.register(name)(cls)

    return decorator
