"""Dry-running each group's pruning on a scratch copy, to find the groups torch-pruning cannot handle.

An unknown custom layer (a per-channel buffer torch-pruning does not know to shrink) or an op that breaks
DepGraph's index mapping (some forms of channel shuffle) shows up here as an exception, a wrong channel count
or a failing forward. Such groups are excluded from the search, each with one warning. So is a group whose
pruning changes the shape of a model output that DepGraph did not see as one, unless output pruning is allowed.

After a plan is applied, :func:`check_output_shapes` is the safety net: an output that changed shape without
the plan pruning an output group explicitly is an error naming the group that did it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune.engine._device import to_device, weights_device
from autoprune.engine._graph import Group, ModelGraph
from autoprune.engine._io import call_model, output_tensors
from autoprune.errors import PruningError

__all__ = ["UnsupportedGroup", "UnsupportedGroupWarning", "check_output_shapes", "find_unsupported"]


_SHUFFLE = "its channels pass through a channel shuffle (view, transpose, view), whose channel order DepGraph cannot map"


class UnsupportedGroupWarning(UserWarning):
    """A group was left out of the search because pruning it fails; the message says how to silence it."""


@dataclass(frozen=True)
class UnsupportedGroup:
    group: Group
    layer_type: str  # the layer where the failure shows (the group's root when no forward failed)
    reason: str

    def message(self) -> str:
        return (
            f"group {self.group.name!r} ({self.layer_type}) cannot be pruned and is left out of the search: "
            f"{self.reason}; add {self.group.name!r} to prune.ignore to silence this"
        )


def find_unsupported(
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[Group],
    ignore: Sequence[str] = (),
    *,
    allow_output_pruning: bool = False,
) -> list[UnsupportedGroup]:
    """Prune half of each group's channels (every other one) on a scratch copy and check the result.

    Groups are tried one after another on the same scratch copy; a failure is confirmed on a fresh copy with
    that group alone, so one bad group never blames the next. Without ``allow_output_pruning`` a changed
    output shape is a failure too.
    """
    found: list[UnsupportedGroup] = []
    scratch: ModelGraph | None = None
    used = False
    example_inputs = to_device(example_inputs, weights_device(model))
    expected = None if allow_output_pruning else _output_shapes(model, example_inputs)

    def fresh() -> ModelGraph:
        return ModelGraph(copy.deepcopy(model), example_inputs, ignore, allow_output_pruning=allow_output_pruning)

    for group in groups:
        if group.channels < 2:
            continue
        if scratch is None:
            scratch, used = fresh(), False
        if scratch.crosses_shuffle(group.name):
            found.append(UnsupportedGroup(group, group.layer_type, _SHUFFLE))
            continue
        problem = _try_group(scratch, group, example_inputs, expected)
        if problem is not None and used:
            scratch = fresh()
            problem = _try_group(scratch, group, example_inputs, expected)
        if problem is not None:
            found.append(UnsupportedGroup(group, problem[0], problem[1]))
            scratch = None  # half-pruned in an unknown way: start the next group on a fresh copy
        else:
            used = True
    return found


def _try_group(
    graph: ModelGraph, group: Group, example_inputs: Any, expected: list[tuple[int, ...]] | None
) -> tuple[str, str] | None:
    """``(layer type, reason)`` when pruning ``group`` fails, else None.

    A changed output shape is a failure only given the ``expected`` shapes (output pruning not allowed).
    """
    try:
        # Every other channel of each part a grouped conv splits the channels into, as apply_plan removes the
        # same positions from every part (with a whole group as one part, every other channel).
        parts = graph.channel_groups(group.name)
        size = group.channels // parts
        if size < 2:
            return group.layer_type, f"a grouped layer splits its {group.channels} channels into {parts} parts of one"
        remove = [part * size + i for part in range(parts) for i in range(1, size, 2)]
        graph.prune(group.name, remove)
        after = graph.channels_of(group.name)
    except Exception as exc:  # torch-pruning fails in many ways on what it cannot map
        return group.layer_type, _short(exc)
    if after != group.channels - len(remove):
        return group.layer_type, (
            f"removing {len(remove)} of {group.channels} channels left {after}, the index mapping is broken"
        )
    # A stack of the modules whose forward is running: when the forward fails, the top is the culprit.
    entered: list[nn.Module] = []

    def enter(module: nn.Module, _args: Any) -> None:
        entered.append(module)

    def leave(_module: nn.Module, _args: Any, _out: Any) -> None:
        entered.pop()

    shapes, failed_in = None, None
    handles = []
    for module in graph.model.modules():
        handles += [module.register_forward_pre_hook(enter), module.register_forward_hook(leave)]
    try:
        shapes = _output_shapes(graph.model, example_inputs)
    except Exception as exc:
        failed_in = entered[-1] if entered else None
        reason = f"the pruned model's forward fails: {_short(exc)}"
    finally:
        for handle in handles:
            handle.remove()
    if shapes is None:
        names = {m: n for n, m in graph.model.named_modules()}
        if failed_in is not None:
            return type(failed_in).__name__, f"{reason} (in {names.get(failed_in) or 'the model'})"
        return group.layer_type, reason
    if expected is not None and shapes != expected:
        return group.layer_type, (
            f"pruning it changes the model's output shape from {_shapes(expected)} to {_shapes(shapes)} "
            "(its channels reach the output)"
        )
    return None


def check_output_shapes(
    model: nn.Module,
    example_inputs: Any,
    pruned: nn.Module,
    expected: list[tuple[int, ...]],
    removals: Mapping[str, Sequence[int]],
) -> None:
    """Raise a PruningError naming the group when ``pruned``'s outputs no longer have the ``expected`` shapes.

    ``removals`` are the channels the plan removed per group, in the order they were removed; to name the
    culprit they are removed again from a fresh copy of ``model``, one group at a time (only on failure).
    """
    example_inputs = to_device(example_inputs, weights_device(model))
    after = _output_shapes(pruned, example_inputs)
    if after == expected:
        return
    scratch = ModelGraph(copy.deepcopy(model), example_inputs, allow_output_pruning=True)
    culprit = None
    for name, remove in removals.items():
        scratch.prune(name, remove)
        if _output_shapes(scratch.model, example_inputs) != expected:
            culprit = name
            break
    which = f"group {culprit!r}" if culprit else f"the plan (groups {', '.join(map(repr, removals))})"
    raise PruningError(
        f"{which} changes the model's output shape from {_shapes(expected)} to {_shapes(after)}: its channels "
        "reach the output; add it to prune.ignore"
    )


@torch.no_grad()
def _output_shapes(model: nn.Module, example_inputs: Any) -> list[tuple[int, ...]]:
    was_training = model.training
    model.eval()
    try:
        out = call_model(model, example_inputs)
    finally:
        model.train(was_training)
    return [tuple(t.shape) for t in output_tensors(out)]


def _shapes(shapes: list[tuple[int, ...]]) -> str:
    return ", ".join(str(list(s)) for s in shapes)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"
