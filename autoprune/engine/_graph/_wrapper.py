"""ModelGraph: a model's prunable groups, enumerated, scored and pruned through DepGraph.

It composes the jobs kept in their own modules: tracing (``_traced``), model outputs (``_outputs``), channel
shuffles (``_shuffles``), attention sites (``_sites``) and the rows a criterion scores (``_scores``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch_pruning as tp
from torch import nn

from autoprune.criteria import GroupTensors
from autoprune.engine._attention import AttentionAdapter
from autoprune.engine._graph._conv1d import linearize_conv1d
from autoprune.engine._graph._group import Group
from autoprune.engine._graph._names import matching_modules
from autoprune.engine._graph._outputs import output_layers, reaches_output
from autoprune.engine._graph._rows import _ROOT_TYPES
from autoprune.engine._graph._scores import dependency_group_tensors
from autoprune.engine._graph._shuffles import crosses_shuffle, refuse_shuffled
from autoprune.engine._graph._sites import AttentionSites, matches_none, prune_attention
from autoprune.engine._graph._tied import retie, shared_parameters
from autoprune.engine._graph._traced import TracedModel
from autoprune.errors import PruningError

__all__ = ["ModelGraph", "find_output_layers"]


class ModelGraph:
    """The DepGraph of one model instance; pruning through it changes that instance in place."""

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        ignore: Sequence[str] = (),
        *,
        allow_output_pruning: bool = False,
    ) -> None:
        """``allow_output_pruning`` False (the default) leaves out every group whose channels reach a model
        output (see :meth:`output_layers`), as if its layers were ignored; True keeps them, named like the rest."""
        self.model = model
        linearize_conv1d(model)  # GPT-2's Conv1D as marked nn.Linear (see _conv1d): DepGraph cannot trace it
        self._shared = shared_parameters(model)  # tied embeddings: tied again after each pruning
        modules = dict(model.named_modules())
        self._ignored = [modules[n] for n in sorted({n for hits in matching_modules(model, ignore).values() for n in hits})]
        self._sites = AttentionSites(model)
        self._traced = TracedModel(model, example_inputs)
        self.example_inputs = self._traced.example_inputs
        self.graph = self._traced.graph
        self.output_shapes = self._traced.output_shapes
        self._roots: dict[str, nn.Module] = {}
        self._groups: list[Group] = []
        self._output_groups: set[str] = set()
        self._shuffled: set[str] = set()  # groups whose channels reach a cut channel shuffle
        # Each conv/linear's kept channels, as indices into its unpruned (out, in) channels: what reconstruction
        # needs to match a pruned layer with its base. Only layers that lost channels are listed.
        self.kept: dict[nn.Module, tuple[list[int], list[int]]] = {}
        self.left_out: list[tuple[Group, str]] = []  # groups that cannot be pruned, each with the reason
        visited = self._dependency_groups(modules, ignore, allow_output_pruning)
        found, left_out = self._sites.groups(self._traced, set(self._ignored), ignore, visited)
        for group, root in found:
            self._roots[group.name] = root
            self._groups.append(group)
        self.left_out.extend(left_out)
        self._groups.sort(key=lambda g: (self._traced.order[self._roots[g.name]], g.name))

    def _dependency_groups(
        self, modules: dict[str, nn.Module], ignore: Sequence[str], allow_output_pruning: bool
    ) -> set[nn.Module]:
        """Enumerate DepGraph's groups into :attr:`groups` and :attr:`left_out`; returns the layers whose output
        channels some group prunes."""
        tp_groups, visited = self._all_tp_groups(self._ignored)
        for tp_group in tp_groups:
            crossed = crosses_shuffle(self.graph, tp_group)
            reaches = reaches_output(self._traced, tp_group)
            if reaches and not allow_output_pruning:
                continue
            group = self._traced.describe(tp_group)
            heads_of = self._sites.heads_in(self._traced, tp_group)
            if heads_of:  # DepGraph coupled some heads' channels to other ones: the adapter's groups own them
                reason = f"its channels include heads of {heads_of[0]!r}, pruned as that attention's own groups"
                self.left_out.append((group, reason))
                continue
            if matches_none(group.name, ignore):
                self._roots[group.name] = modules[group.name]
                self._groups.append(group)
                if reaches:
                    self._output_groups.add(group.name)
                if crossed:
                    self._shuffled.add(group.name)
        return visited

    def _all_tp_groups(self, ignored: Sequence[nn.Module]) -> tuple[list[Any], set[nn.Module]]:
        """torch-pruning's ``get_all_groups``, except that no group is rooted at a linear whose outputs are
        attention heads; and the layers whose output channels some group prunes."""
        skipped = {*ignored, *self.graph.IGNORED_LAYERS_IN_TRACING}
        groups, visited = [], set()
        for module in list(self.graph.module2node):
            if not isinstance(module, _ROOT_TYPES) or module in skipped or module in visited:
                continue
            if module in self._sites.claimed or module in self._sites.unknown:
                continue
            pruner = self.graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            channels = list(range(pruner.get_out_channels(module)))
            group = self.graph.get_pruning_group(module, pruner.prune_out_channels, channels)
            outs = [d.target.module for d, _ in group if self._traced.prunes_out(d)]
            visited.update(outs)
            if not any(m in skipped for m in outs):
                groups.append(group)
        return groups, visited

    # -- model outputs and shuffles ----------------------------------------------------------------------

    def output_layers(self) -> list[str]:
        """The conv/linear layers whose output channels reach a model output, ignored or not, in model order.

        A layer counts when removing its output channels would change the shape of a model output: the
        classifier, a segmentation head, every layer coupled to an output through residual adds, a trailing
        BatchNorm, a flatten or a concat, and the producers of every tensor of a tuple/dict output.
        """
        return output_layers(self._traced, self._all_tp_groups([])[0])

    def reaches_output(self, name: str) -> bool:
        """Whether group ``name`` (present only with ``allow_output_pruning``) removes output channels."""
        return name in self._output_groups

    def crosses_shuffle(self, name: str) -> bool:
        """Whether group ``name``'s channels pass through a channel shuffle, whose channel order DepGraph cannot
        map: such a group cannot be pruned (see :func:`_build_graph`)."""
        return name in self._shuffled

    # -- enumeration -------------------------------------------------------------------------------------

    @property
    def groups(self) -> list[Group]:
        return list(self._groups)

    def _site(self, name: str) -> tuple[AttentionAdapter, str] | None:
        if name not in self._roots:
            return None
        return self._sites.site_of(name)

    def _tp_group(self, name: str) -> Any:
        try:
            root = self._roots[name]
        except KeyError:
            raise PruningError(f"group {name!r} is not a prunable group of this model") from None
        return self._traced.whole_group(root)

    def channels_of(self, name: str) -> int:
        site = self._site(name)
        if site is not None:
            return site[0].channels(site[1])
        root = self._roots[name]
        return int(self.graph.get_pruner_of_module(root).get_out_channels(root))

    def channel_groups(self, name: str) -> int:
        """Into how many equal parts a grouped conv (not a depthwise one) or a GroupNorm of the group splits its
        channels: a pruning must remove the same positions from every part, as torch-pruning's MetaPruner does."""
        if self._site(name) is not None:
            return 1
        parts = 1
        for dep, _ in self._tp_group(name):
            module = dep.target.module
            if isinstance(module, nn.MultiheadAttention):
                # Its embed_dim is num_heads heads: each must lose the same positions, or the heads would re-split.
                parts = math.lcm(parts, module.num_heads)
                continue
            pruner = self.graph.get_pruner_of_module(module) if isinstance(module, nn.Module) else None
            if pruner is None or (isinstance(module, tp.ops.TORCH_CONV) and module.groups == module.out_channels):
                continue  # a depthwise conv's channels stay coupled one to one, whichever are removed
            if self._traced.prunes_out(dep):
                parts = math.lcm(parts, int(pruner.get_out_channel_groups(module)))
            else:
                parts = math.lcm(parts, int(pruner.get_in_channel_groups(module)))
        return parts

    # -- scoring -----------------------------------------------------------------------------------------

    def group_tensors(self, name: str, scope: str, seed: int = 0) -> GroupTensors:
        """The per-channel rows a criterion scores, for scope ``layer`` or ``group``.

        Weight rows always; gradient rows in the same layout when the weights hold ``.grad``; |gamma| of
        the BatchNorm on the root's outputs (``layer``) or summed over every coupled BatchNorm (``group``).
        """
        site = self._site(name)
        if site is not None:
            adapter, unit = site
            return GroupTensors(name, adapter.rows(unit, scope), grads=adapter.grad_rows(unit, scope), seed=seed)
        root = self._roots[name]
        channels = self.channels_of(name)
        return dependency_group_tensors(self._traced, self._tp_group(name), name, root, channels, scope, seed)

    # -- pruning -----------------------------------------------------------------------------------------

    def prune(self, name: str, remove: Sequence[int]) -> None:
        """Remove the channels ``remove`` (indices into the group's root) from every coupled layer."""
        if not remove:
            return
        site = self._site(name)
        if site is not None:
            removed = sorted(int(i) for i in remove)
            for projection, idxs in site[0].prune_indices(site[1], removed):
                self._track(projection.linear, projection.axis == "out", idxs)
            prune_attention(*site, removed)
            return
        if name in self._shuffled:
            refuse_shuffled(name)
        root = self._roots[name]
        pruner = self.graph.get_pruner_of_module(root)
        try:
            group = self.graph.get_pruning_group(root, pruner.prune_out_channels, sorted(int(i) for i in remove))
            for dep, idxs in group:
                if isinstance(dep.target.module, _ROOT_TYPES):
                    self._track(dep.target.module, self._traced.prunes_out(dep), [int(getattr(i, "idx", i)) for i in idxs])
            group.prune()
        except Exception as exc:
            raise PruningError(f"group {name!r}: torch-pruning failed: {type(exc).__name__}: {exc}") from exc
        retie(self._shared)

    def _track(self, module: nn.Module, out: bool, idxs: Sequence[int]) -> None:
        _tracked(self.kept, module, out, idxs)


def _width(module: Any, out: bool) -> int:
    weight = module.weight
    if isinstance(module, nn.Linear):
        return int(weight.shape[0] if out else weight.shape[1])
    groups = getattr(module, "groups", 1)
    return int(weight.shape[0] if out else weight.shape[1] * groups)


def _tracked(kept: dict[nn.Module, tuple[list[int], list[int]]], module: nn.Module, out: bool, idxs: Sequence[int]) -> None:
    """Remove ``idxs`` (indices into ``module``'s current channels) from its kept (out, in) channels."""
    current = kept.get(module) or (list(range(_width(module, True))), list(range(_width(module, False))))
    gone = set(idxs)
    side = [c for j, c in enumerate(current[0 if out else 1]) if j not in gone]
    kept[module] = (side, current[1]) if out else (current[0], side)


def find_output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """The conv/linear layers whose output channels reach a model output (see :meth:`ModelGraph.output_layers`)."""
    return ModelGraph(model, example_inputs, allow_output_pruning=True).output_layers()
