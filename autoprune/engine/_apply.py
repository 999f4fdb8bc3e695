from __future__ import annotations

import copy
import dataclasses
import hashlib
import math
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from autoprune.criteria import get_criterion, needs_gradients
from autoprune.engine._check import UnsupportedGroup, UnsupportedGroupWarning, check_output_shapes, find_unsupported
from autoprune.engine._device import rng_devices, to_device, weights_device
from autoprune.engine._graph import Group, ModelGraph, count_macs_params
from autoprune.engine._io import call_model, has_labels, output_loss
from autoprune.engine._sparsify import apply_sparsity, count_nonzero_params, refresh_masked_weights
from autoprune.errors import PruningError, did_you_mean
from autoprune.plan import PruningPlan, kept_channels

__all__ = ["LossFn", "PruneReport", "accumulate_gradients", "apply_plan", "find_groups", "group_seed", "select_removed"]

LossFn = Callable[[torch.Tensor, Any], torch.Tensor]  # loss_fn(model(inputs), targets) -> scalar


@dataclass(frozen=True)
class PruneReport:
    """What a plan actually did: MACs and params before and after, and channels kept per group."""

    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    channels: dict[str, tuple[int, int]]  # each planned group -> (channels before, after)
    seconds: dict[str, float] = field(default_factory=dict)  # graph, prune, sparsify, count
    nonzero_params_before: int = 0
    nonzero_params_after: int = 0
    sparsity: dict[str, float] = field(default_factory=dict)  # each sparsified layer -> fraction of zero weights
    # Each conv/linear that lost channels -> its kept (output, input) channels, as indices into the base layer's.
    kept: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def macs_ratio(self) -> float:
        return self.macs_after / self.macs_before

    @property
    def params_ratio(self) -> float:
        return self.params_after / self.params_before

    @property
    def nonzero_params_ratio(self) -> float:
        return self.nonzero_params_after / self.nonzero_params_before

    def cost(self, objective: str) -> float:
        """The relative cost a study minimises: ``macs``, ``params`` or ``nonzero_params``."""
        ratios = {"macs": self.macs_ratio, "params": self.params_ratio, "nonzero_params": self.nonzero_params_ratio}
        if objective not in ratios:
            raise ValueError(f"unknown cost objective {objective!r}; expected one of {', '.join(ratios)}")
        return ratios[objective]

    def to_dict(self) -> dict[str, Any]:
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "params_ratio": self.params_ratio,
            "nonzero_params_before": self.nonzero_params_before,
            "nonzero_params_after": self.nonzero_params_after,
            "nonzero_params_ratio": self.nonzero_params_ratio,
            "channels": {name: list(pair) for name, pair in self.channels.items()},
            "sparsity": dict(self.sparsity),
        }


def find_groups(
    model: nn.Module,
    example_inputs: Any,
    ignore: Sequence[str] = (),
    *,
    check: bool = True,
    allow_output_pruning: bool = False,
) -> list[Group]:
    """The prunable groups of ``model``, in model order; modules matching an ``ignore`` glob keep all outputs.

    So do the output layers (whose channels reach a model output: the classifier, a segmentation head), found
    on the traced graph, unless ``allow_output_pruning``. With ``check`` (the default) each group's pruning is
    dry-run on a scratch copy; a group that fails (or, without ``allow_output_pruning``, changes an output's
    shape) is left out with one :class:`UnsupportedGroupWarning` naming it, its layer type and the ``ignore``
    glob that silences it. A model left with no prunable group is a PruningError.
    """
    example_inputs = to_device(example_inputs, weights_device(model))
    graph = ModelGraph(copy.deepcopy(model), example_inputs, ignore, allow_output_pruning=allow_output_pruning)
    groups = graph.groups
    for group, reason in graph.left_out:  # attention heads no adapter can prune (see engine/_attention)
        warnings.warn(UnsupportedGroup(group, group.layer_type, reason).message(), UnsupportedGroupWarning, stacklevel=2)
    if check:
        unsupported = find_unsupported(
            model, example_inputs, groups, ignore, allow_output_pruning=allow_output_pruning
        )
        for item in unsupported:
            warnings.warn(item.message(), UnsupportedGroupWarning, stacklevel=2)
        excluded = {item.group.name for item in unsupported}
        groups = [g for g in groups if g.name not in excluded]
        if not groups and unsupported:
            raise PruningError(f"no group of {type(model).__name__} can be pruned: all {len(excluded)} fail the dry run")
    if not groups:
        protected = [] if allow_output_pruning else graph.output_layers()
        raise PruningError(
            f"{type(model).__name__} has no prunable group: no conv or linear layer whose outputs may be removed"
            + (f" outside the ignore globs {list(ignore)}" if ignore else "")
            + (f" (output layers {protected} are never pruned without allow_output_pruning)" if protected else "")
        )
    return groups


def select_removed(scores: torch.Tensor, keep: int) -> list[int]:
    """Indices of the ``len(scores) - keep`` lowest scores; ties go to the lower index, so it is deterministic."""
    order = torch.argsort(scores.double(), stable=True)
    return sorted(int(i) for i in order[: scores.numel() - keep])


def _select_in_parts(scores: torch.Tensor, keep: int, parts: int) -> list[int]:
    """Like :func:`select_removed`, but removing the same positions from each of ``parts`` equal parts (the
    channel groups of a grouped conv), ranked by their score averaged over the parts, as torch-pruning does."""
    if parts == 1:
        return select_removed(scores, keep)
    size = scores.numel() // parts
    positions = select_removed(scores.reshape(parts, size).double().mean(dim=0), keep // parts)
    return [part * size + i for part in range(parts) for i in positions]


def group_seed(plan: PruningPlan, name: str) -> int:
    """A stable 63-bit seed from the plan and a group name (for criteria that draw at random)."""
    digest = hashlib.sha256(f"{plan.to_json()}\n{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def accumulate_gradients(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn) -> int:
    """Fill every parameter's ``.grad`` with the loss gradient averaged over ``batches``; returns their count.

    Runs in evaluation mode, the network that is pruned: BatchNorm uses its running statistics. In training
    mode a conv followed by BatchNorm is scale-invariant, so ``sum(grad * weight)`` over each of its filters is
    zero in exact arithmetic and a Taylor ranking would be round-off. A dict batch with ``labels`` (Hugging Face's
    convention) is the model's own ``loss``. A fixed random seed covers any op that still draws at random; the
    buffers and the mode are put back afterwards, so only ``.grad`` changes.
    """
    was_training = model.training
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    model.zero_grad(set_to_none=True)
    model.eval()
    count = 0
    try:
        # A fixed seed for whatever draws at random: the same plan, the same scores.
        device = weights_device(model)
        with torch.random.fork_rng(devices=rng_devices(model)), torch.enable_grad():
            torch.manual_seed(0)
            for batch in batches:
                batch = to_device(batch, device)
                if has_labels(batch):  # a Hugging Face batch: the model computes its own loss from the labels
                    loss = output_loss(call_model(model, dict(batch)))
                    if loss is None:
                        raise PruningError("a gradient batch carries 'labels' but the model returned no 'loss'")
                else:
                    inputs, targets = batch
                    loss = loss_fn(model(inputs), targets)
                loss.backward()
                count += 1
    finally:
        with torch.no_grad():
            for buffer, saved in buffers:
                buffer.copy_(saved)
        model.train(was_training)
    if count == 0:
        raise PruningError("no gradient batches were given, but the plan uses a criterion that needs gradients")
    for param in model.parameters():
        if param.grad is not None:
            param.grad /= count
    return count


def apply_plan(
    model: nn.Module,
    example_inputs: Any,
    plan: PruningPlan,
    base_counts: tuple[int, int] | None = None,
    *,
    gradient_batches: Iterable[tuple[Any, Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> tuple[nn.Module, PruneReport]:
    """Prune a copy of ``model`` as ``plan`` says; ``model`` itself is never changed.

    Channels are removed first (the plan's groups, through DepGraph); then, with ``plan.sparsity``, single
    weights of what is left are masked with ``torch.nn.utils.prune`` (the masks stay on the returned copy).

    Every group's channels are scored on the unpruned copy first, then removed, so one group's pruning never
    shifts another's scores. ``base_counts`` (MACs, params of ``model``) skips counting the base again.
    A plan using a criterion that needs gradients (``taylor``) needs ``gradient_batches`` of
    ``(inputs, targets)``; their averaged ``loss_fn`` (default: cross-entropy) gradient is taken on the copy.
    """
    started = time.perf_counter()
    refresh_masked_weights(model)  # a masked model (a fine-tuned sparse one) deep-copies only once refreshed
    pruned = copy.deepcopy(model)  # on the model's device, as every tensor the engine allocates for it
    example_inputs = to_device(example_inputs, weights_device(model))
    if not plan.groups:
        # Nothing to remove: no dependency graph to build (unstructured pruning alone keeps every channel).
        return _finish(model, pruned, example_inputs, plan, {}, base_counts, {"graph": 0.0, "prune": 0.0}, time.perf_counter())
    # Every group, output ones included: a plan naming an output group asks for it explicitly.
    graph = ModelGraph(pruned, example_inputs, allow_output_pruning=True)
    known = {g.name: g for g in graph.groups}
    _check_known(plan, known)
    _gradients_for(plan, pruned, gradient_batches, loss_fn)
    graph_done = time.perf_counter()

    targets, removals = _plan_removals(graph, known, plan)
    pruned.zero_grad(set_to_none=True)  # the gradients served the scores; the pruned model carries none
    for name, remove in removals.items():
        graph.prune(name, remove)
    pruned_done = time.perf_counter()

    channels_report = _channels_reached(graph, known, targets)
    if not any(graph.reaches_output(name) for name in removals):
        check_output_shapes(model, example_inputs, pruned, graph.output_shapes, removals)

    seconds = {"graph": graph_done - started, "prune": pruned_done - graph_done}
    pruned, report = _finish(model, pruned, example_inputs, plan, channels_report, base_counts, seconds, pruned_done)
    names = {module: name for name, module in pruned.named_modules()}
    kept = {names[m]: (tuple(out), tuple(inp)) for m, (out, inp) in graph.kept.items() if m in names}
    return pruned, dataclasses.replace(report, kept=kept)


def _check_known(plan: PruningPlan, known: dict[str, Group]) -> None:
    for name in plan.groups:
        if name not in known:
            raise PruningError(
                f"plan names group {name!r}, which is not a prunable group of this model{did_you_mean(name, known)}"
            )


def _gradients_for(
    plan: PruningPlan,
    pruned: nn.Module,
    gradient_batches: Iterable[tuple[Any, Any]] | None,
    loss_fn: LossFn | None,
) -> None:
    """Accumulate the gradients the plan's criteria need (none when no pruned group's criterion needs them)."""
    gradient_users = sorted({e.criterion for e in plan.groups.values() if e.ratio > 0 and needs_gradients(e.criterion)})
    if gradient_users:
        if gradient_batches is None:
            raise PruningError(
                f"criterion {gradient_users[0]!r} needs gradients: pass gradient_batches to apply_plan"
            )
        accumulate_gradients(pruned, gradient_batches, loss_fn or nn.functional.cross_entropy)


def _plan_removals(
    graph: ModelGraph, known: dict[str, Group], plan: PruningPlan
) -> tuple[dict[str, int], dict[str, list[int]]]:
    """Each planned group's kept channel count, and the channels to remove from each group that loses any,
    every group scored on the unpruned model."""
    targets: dict[str, int] = {}
    removals: dict[str, list[int]] = {}
    for name, entry in plan.groups.items():
        channels = known[name].channels
        parts = graph.channel_groups(name)
        # A grouped conv's parts keep equal sizes: the kept count rounds up to a multiple of their number.
        keep = min(channels, math.ceil(kept_channels(channels, entry.ratio, plan.round_to) / parts) * parts)
        targets[name] = keep
        if keep == channels:
            continue
        tensors = graph.group_tensors(name, plan.scope, seed=group_seed(plan, name))
        try:
            scores = get_criterion(entry.criterion)(tensors)
        except Exception as exc:
            raise PruningError(f"group {name!r}: criterion {entry.criterion!r} failed: {exc}") from exc
        if scores.shape != (channels,) or not torch.isfinite(scores).all():
            raise PruningError(
                f"group {name!r}: criterion {entry.criterion!r} returned scores of shape "
                f"{tuple(scores.shape)} (finite: {bool(torch.isfinite(scores).all())}); expected ({channels},), finite"
            )
        removals[name] = _select_in_parts(scores, keep, parts)
    return targets, removals


def _channels_reached(graph: ModelGraph, known: dict[str, Group], targets: dict[str, int]) -> dict[str, tuple[int, int]]:
    """Each planned group's (channels before, after); fails on a group that did not land on its target."""
    channels_report: dict[str, tuple[int, int]] = {}
    for name, expected in targets.items():
        after = graph.channels_of(name)
        if after != expected:
            raise PruningError(
                f"group {name!r} has {after} channels after pruning; the plan asked for {expected} "
                f"of {known[name].channels}"
            )
        channels_report[name] = (known[name].channels, after)
    return channels_report


def _finish(
    model: nn.Module,
    pruned: nn.Module,
    example_inputs: Any,
    plan: PruningPlan,
    channels: dict[str, tuple[int, int]],
    base_counts: tuple[int, int] | None,
    seconds: dict[str, float],
    started: float,
) -> tuple[nn.Module, PruneReport]:
    """Sparsify what the channel pruning left (if the plan says so), then count."""
    sparsity: dict[str, float] = {}
    if plan.sparsity is not None:
        sparsity = apply_sparsity(pruned, plan.sparsity)
    sparsified = time.perf_counter()
    macs_before, params_before = base_counts or count_macs_params(model, example_inputs)
    macs_after, params_after = count_macs_params(pruned, example_inputs)
    report = PruneReport(
        macs_before=macs_before,
        macs_after=macs_after,
        params_before=params_before,
        params_after=params_after,
        channels=channels,
        seconds={**seconds, "sparsify": sparsified - started, "count": time.perf_counter() - sparsified},
        nonzero_params_before=count_nonzero_params(model),
        nonzero_params_after=count_nonzero_params(pruned),
        sparsity=sparsity,
    )
    return pruned, report
