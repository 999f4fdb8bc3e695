"""``Group``: a set of coupled channels, in the project's own terms (never torch-pruning's Group)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Group"]


@dataclass(frozen=True)
class Group:
    """A set of coupled channels that must be pruned together.

    ``name`` is the qualified name of its root (the first conv/linear, in model order, whose output channels
    it removes); ``members`` are every module the group touches, in model order.
    """

    name: str
    channels: int
    members: tuple[str, ...]
    layer_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "channels": self.channels,
            "members": list(self.members),
            "layer_type": self.layer_type,
        }
