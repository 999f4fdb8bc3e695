"""Shared pieces of the typed config: the strict base model, value types and their checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
)

from autoprune.criteria import CRITERIA
from autoprune.errors import did_you_mean

Granularity = Literal["shared", "per_stage", "per_group", "tied"]  # tied: see autoprune/space/_tie.py
ScopeName = Literal["layer", "group"]
DEFAULT_CRITERIA_SCOPE: ScopeName = "layer"  # prune.criteria_scope's default: the one line to switch it
SAMPLERS = ("tpe", "nsga2", "random", "gp")


def known_name(name: str, kind: str, known: Sequence[str], *, alternative: str = "") -> str:
    """``name`` when it is one of ``known``; else a ValueError naming the ``kind``, a close match and every known
    name (then ``alternative``, e.g. ``" or 'pkg.module:fn'"``)."""
    if name not in known:
        raise ValueError(f"unknown {kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)}{alternative}")
    return name


def _known_sampler(name: str) -> str:
    return known_name(name, "sampler", SAMPLERS)


Sampler = Annotated[str, AfterValidator(_known_sampler)]  # an Optuna sampler autoprune knows by name
PruneMode = Literal["structured", "unstructured"]


def _known_criterion(name: str) -> str:
    return known_name(name, "criterion", CRITERIA.names())


Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]
Positive = Annotated[float, Field(gt=0.0)]
MacsFraction = Annotated[float, Field(gt=0.0, le=1.0)]
CriterionName = Annotated[str, AfterValidator(_known_criterion)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _ordered(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"{name} bounds are reversed: [{lo}, {hi}]; expected [low, high] with low <= high")
    return bounds


def spec_or_name(name: str, kind: str) -> str:
    """``name`` when it is a plain name or ``"pkg.module:fn"``; else a ValueError naming the ``kind``.

    Whether a plain name is registered (a loss, a latency backend, a cost) is checked when the run is resolved
    (``autoprune.study.resolve``): the registries live with the code that uses them, above the config."""
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ValueError(f"expected a registered {kind} or 'pkg.module:fn', found {name!r}")
    elif not name:
        raise ValueError(f"expected a registered {kind} or 'pkg.module:fn', found ''")
    return name
