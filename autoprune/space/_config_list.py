"""NNI 3.0 ``config_list`` -> which groups are searched, and the ratio bounds of each.

Selectors pick modules as NNI's ``select_modules_by_config`` does (``op_names`` / ``op_names_re`` / ``op_types``,
then the excludes); autoprune prunes *groups*, so an entry selects the groups whose root module it picks.
``sparse_ratio`` fixes the ratio (clamped into ``[min_sparse_ratio, max_sparse_ratio]``, as NNI clamps);
``min_sparse_ratio`` / ``max_sparse_ratio`` alone bound the searched ratio, the rest of the bounds coming from
``prune.ratio``. A group several entries select takes the last one's, as in NNI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pydantic import ValidationError

from autoprune.config import NNIConfigEntry, validation_error
from autoprune.errors import ConfigError, did_you_mean

__all__ = ["config_list_bounds", "parse_config_list", "plan_to_config_list"]


class GroupLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def layer_type(self) -> str: ...


def parse_config_list(raw: Sequence[Any], *, key: str = "config_list") -> list[NNIConfigEntry]:
    """Validate raw dicts (as an NNI user writes them); an unsupported key is a ConfigError naming it."""
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise ConfigError(f"expected a list of dicts, found {type(raw).__name__}", key=key)
    entries = []
    for i, item in enumerate(raw):
        if isinstance(item, NNIConfigEntry):
            entries.append(item)
            continue
        try:
            entries.append(NNIConfigEntry.model_validate(item))
        except ValidationError as exc:
            raise validation_error(exc, NNIConfigEntry, prefix=f"{key}[{i}]") from None
    return entries


def _regex(pattern: str, key: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"invalid regular expression {pattern!r}: {exc}", key=key) from None


def _selected(entry: NNIConfigEntry, module_types: Mapping[str, str], key: str) -> set[str]:
    """NNI's module selection (``nni.compression.base.config.select_modules_by_config``), with typos as errors."""
    types_present = sorted(set(module_types.values()))
    for field_name in ("op_types", "exclude_op_types"):
        for op_type in getattr(entry, field_name) or []:
            if op_type not in types_present:
                raise ConfigError(
                    f"no module of type {op_type!r} in the model{did_you_mean(op_type, types_present)}",
                    key=f"{key}.{field_name}",
                )
    for field_name in ("op_names", "exclude_op_names"):
        for name in getattr(entry, field_name) or []:
            if name not in module_types:
                raise ConfigError(
                    f"no module named {name!r} in the model{did_you_mean(name, module_types)}",
                    key=f"{key}.{field_name}",
                )
    selected = set(entry.op_names or [])
    for pattern in entry.op_names_re or []:
        rx = _regex(pattern, f"{key}.op_names_re")
        selected.update(n for n in module_types if rx.match(n))
    if entry.op_types:
        by_type = {n for n, t in module_types.items() if t in entry.op_types}
        selected = selected & by_type if (entry.op_names or entry.op_names_re) else selected | by_type
    selected -= set(entry.exclude_op_names)
    for pattern in entry.exclude_op_names_re:
        rx = _regex(pattern, f"{key}.exclude_op_names_re")
        selected = {n for n in selected if not rx.match(n)}
    return {n for n in selected if module_types[n] not in entry.exclude_op_types}


def config_list_bounds(
    entries: Sequence[NNIConfigEntry],
    groups: Sequence[GroupLike],
    module_types: Mapping[str, str],
    default: tuple[float, float],
    *,
    key: str = "prune.nni_config_list",
) -> dict[str, tuple[float, float]]:
    """``{group name: (low, high)}`` for the groups the entries select, in model order.

    ``module_types`` maps every module name of the model to its class name (``Conv2d``). Naming a module
    that is not a group root, or an entry that selects no group, is an error: autoprune would otherwise
    prune something other than what the entry says.
    """
    roots = {g.name for g in groups}
    chosen: dict[str, tuple[float, float]] = {}
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        selected = _selected(entry, module_types, where)
        not_roots = sorted(n for n in (entry.op_names or []) if n in selected and n not in roots)
        if not_roots:
            raise ConfigError(
                f"module {not_roots[0]!r} is not the root of a prunable group (its output channels are coupled "
                f"into another group, or never pruned); groups are named by their root: {', '.join(sorted(roots))}",
                key=f"{where}.op_names",
            )
        hits = selected & roots
        if not hits:
            raise ConfigError("the entry selects no prunable group (groups are chosen by their root module)", key=where)
        lo = entry.min_sparse_ratio if entry.min_sparse_ratio is not None else default[0]
        hi = entry.max_sparse_ratio if entry.max_sparse_ratio is not None else default[1]
        if entry.sparse_ratio is not None:
            low = entry.min_sparse_ratio or 0.0
            high = entry.max_sparse_ratio if entry.max_sparse_ratio is not None else 1.0
            lo = hi = min(high, max(low, entry.sparse_ratio))
        elif lo > hi:
            raise ConfigError(
                f"the ratio bounds come out reversed: [{lo}, {hi}] (prune.ratio gives the missing bound)", key=where
            )
        for name in hits:
            chosen[name] = (float(lo), float(hi))
    return {g.name: chosen[g.name] for g in groups if g.name in chosen}


def plan_to_config_list(groups: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An NNI config_list that fixes each group's ratio: ``groups`` is ``plan.groups`` (or name -> ratio).

    Groups with the same ratio share one entry; the list is valid NNI 3.0 and maps back onto the same plan.
    """
    by_ratio: dict[float, list[str]] = {}
    for name, entry in groups.items():
        if "#" in name:
            raise ConfigError(
                f"group {name!r} prunes whole attention heads, which an NNI config_list cannot express; "
                "leave it out of the plan (prune.ignore: ['*#heads'])"
            )
        ratio = float(getattr(entry, "ratio", entry))
        by_ratio.setdefault(ratio, []).append(name)
    return [{"op_names": names, "sparse_ratio": ratio} for ratio, names in by_ratio.items()]
