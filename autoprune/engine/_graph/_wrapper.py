"""ModelGraph: a model's prunable groups, enumerated, scored and pruned through DepGraph."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoprune.criteria import GroupTensors
from autoprune.engine._attention import HEADS_SUFFIX, AttentionAdapter, find_attention_sites, find_unknown_attention
from autoprune.engine._device import to_device, weights_device
from autoprune.engine._graph._conv1d import linearize_conv1d
from autoprune.engine._graph._names import matching_modules
from autoprune.engine._graph._rows import _ROOT_TYPES, _out_rows, _rows_of, _scatter_rows
from autoprune.engine._graph._tied import retie, shared_parameters
from autoprune.engine._graph._trace import _build_graph, _output_nodes, _unwrapped_parameters
from autoprune.engine._io import output_tensors
from autoprune.errors import PruningError


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
        return {"name": self.name, "channels": self.channels, "members": list(self.members), "layer_type": self.layer_type}


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
        self.example_inputs = example_inputs = to_device(example_inputs, weights_device(model))
        self._names = {m: n for n, m in model.named_modules()}
        self._order = {m: i for i, (_, m) in enumerate(model.named_modules())}
        ignored_names = {n for hits in matching_modules(model, ignore).values() for n in hits}
        modules = dict(model.named_modules())
        self._ignored = [modules[n] for n in sorted(ignored_names)]
        sites = find_attention_sites(model)
        self._attention = {s.name: s for s in sites if s.unsupported is None}  # by head-dims group name
        # Linears whose outputs are heads root no DepGraph group: an adapter's groups stand for them, and those of
        # a head layout no adapter knows are left out (see _all_tp_groups).
        self._claimed = {m: s for s in self._attention.values() for m in s.claimed}
        unknown = find_unknown_attention(model, sites)
        self._unknown = {m: u for u in unknown for _, m in u.linears}
        unwrapped = _unwrapped_parameters(model)
        self._param_names = {id(p): n for n, p in model.named_parameters() if any(p is q for q, _ in unwrapped)}
        outputs: list[Any] = []
        was_training = model.training
        model.eval()
        handle = model.register_forward_hook(lambda _m, _args, out: outputs.append(out))
        try:
            # forward_fn: DepGraph's own first try, model(*inputs), would unpack a lone tensor's batch dimension.
            self.graph = _build_graph(model, example_inputs, unwrapped)
        except Exception as exc:
            raise PruningError(f"cannot trace the model's dependency graph: {type(exc).__name__}: {exc}") from exc
        finally:
            handle.remove()
            model.train(was_training)
        out = output_tensors(outputs[-1]) if outputs else []
        self.output_shapes: list[tuple[int, ...]] = [tuple(t.shape) for t in out]
        self._output_nodes = _output_nodes(self.graph, out)
        self._roots: dict[str, nn.Module] = {}
        self._groups: list[Group] = []
        self._output_groups: set[str] = set()
        self._shuffled: set[str] = set()  # groups whose channels reach a cut channel shuffle
        self.left_out: list[tuple[Group, str]] = []  # groups that cannot be pruned, each with the reason
        tp_groups, visited = self._all_tp_groups(self._ignored)
        for tp_group in tp_groups:
            crossed = self._crosses_shuffle(tp_group)
            reaches_output = self._reaches_output(tp_group)
            if reaches_output and not allow_output_pruning:
                continue
            group = self._describe(tp_group)
            heads_of = [
                self._claimed[d.target.module].owner_name
                for d, _ in tp_group
                if d.target.module in self._claimed and self.graph.is_out_channel_pruning_fn(d.handler)
            ]
            if heads_of:  # DepGraph coupled some heads' channels to other ones: the adapter's groups own them
                reason = f"its channels include heads of {heads_of[0]!r}, pruned as that attention's own groups"
                self.left_out.append((group, reason))
                continue
            if not any(fnmatch.fnmatchcase(group.name, glob) for glob in ignore):
                self._roots[group.name] = modules[group.name]
                self._groups.append(group)
                if reaches_output:
                    self._output_groups.add(group.name)
                if crossed:
                    self._shuffled.add(group.name)
        self._attention_groups(sites, ignore, visited)
        self._groups.sort(key=lambda g: (self._order[self._roots[g.name]], g.name))

    # -- model outputs -----------------------------------------------------------------------------------

    def _reaches_output(self, tp_group: Any) -> bool:
        """Whether pruning ``tp_group`` removes channels of a model output (its shape would change)."""
        return any(
            dep.target in self._output_nodes
            and (dep.target.type == tp.ops.OPTYPE.OUTPUT or self.graph.is_out_channel_pruning_fn(dep.handler))
            for dep, _ in tp_group
        )

    def output_layers(self) -> list[str]:
        """The conv/linear layers whose output channels reach a model output, ignored or not, in model order.

        A layer counts when removing its output channels would change the shape of a model output: the
        classifier, a segmentation head, every layer coupled to an output through residual adds, a trailing
        BatchNorm, a flatten or a concat, and the producers of every tensor of a tuple/dict output.
        """
        found: set[nn.Module] = set()
        for tp_group in self._all_tp_groups([])[0]:
            if self._reaches_output(tp_group):
                found.update(
                    dep.target.module
                    for dep, _ in tp_group
                    if isinstance(dep.target.module, _ROOT_TYPES) and self.graph.is_out_channel_pruning_fn(dep.handler)
                )
        return [self._names[m] for m in sorted(found & set(self._names), key=lambda m: self._order[m])]

    def _crosses_shuffle(self, tp_group: Any) -> bool:
        """Whether ``tp_group``'s channels reach a channel shuffle that the graph was cut at."""
        cut = self.graph.cut
        return bool(self.graph.shuffles) and any(
            d.index_mapping[0] is cut and d.is_triggered_by(dep.handler) for dep, _ in tp_group for d in dep.target.dependencies
        )

    def crosses_shuffle(self, name: str) -> bool:
        """Whether group ``name``'s channels pass through a channel shuffle, whose channel order DepGraph cannot
        map: such a group cannot be pruned (see :func:`_build_graph`)."""
        return name in self._shuffled

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
            if self.graph.is_out_channel_pruning_fn(dep.handler):
                parts = math.lcm(parts, int(pruner.get_out_channel_groups(module)))
            else:
                parts = math.lcm(parts, int(pruner.get_in_channel_groups(module)))
        return parts

    def reaches_output(self, name: str) -> bool:
        """Whether group ``name`` (present only with ``allow_output_pruning``) removes output channels."""
        return name in self._output_groups

    # -- enumeration -------------------------------------------------------------------------------------

    def _describe(self, tp_group: Any) -> Group:
        out_roots = [
            dep.target.module
            for dep, _ in tp_group
            if isinstance(dep.target.module, _ROOT_TYPES) and self.graph.is_out_channel_pruning_fn(dep.handler)
        ]
        root = min(out_roots, key=lambda m: self._order.get(m, 1 << 30))
        members = sorted(
            {dep.target.module for dep, _ in tp_group if isinstance(dep.target.module, nn.Module)} & set(self._names),
            key=lambda m: self._order[m],
        )
        # Unwrapped parameters (class token, position embedding) come first, as they feed the first layers.
        params = sorted(
            {self._param_names[id(d.target.module)] for d, _ in tp_group if id(d.target.module) in self._param_names}
        )
        channels = self.graph.get_pruner_of_module(root).get_out_channels(root)
        return Group(
            name=self._names[root],
            channels=int(channels),
            members=(*params, *(self._names[m] for m in members)),
            layer_type=type(root).__name__,
        )

    def _all_tp_groups(self, ignored: Sequence[nn.Module]) -> tuple[list[Any], set[nn.Module]]:
        """torch-pruning's ``get_all_groups``, except that no group is rooted at a linear whose outputs are
        attention heads; and the layers whose output channels some group prunes."""
        skipped = {*ignored, *self.graph.IGNORED_LAYERS_IN_TRACING}
        groups, visited = [], set()
        for module in list(self.graph.module2node):
            if not isinstance(module, _ROOT_TYPES) or module in skipped or module in visited:
                continue
            if module in self._claimed or module in self._unknown:
                continue
            pruner = self.graph.get_pruner_of_module(module)
            if pruner is None or pruner.get_out_channels(module) is None:
                continue
            channels = list(range(pruner.get_out_channels(module)))
            group = self.graph.get_pruning_group(module, pruner.prune_out_channels, channels)
            outs = [d.target.module for d, _ in group if self.graph.is_out_channel_pruning_fn(d.handler)]
            visited.update(outs)
            if not any(m in skipped for m in outs):
                groups.append(group)
        return groups, visited

    def _attention_groups(
        self, sites: Sequence[AttentionAdapter], ignore: Sequence[str], visited: set[nn.Module]
    ) -> None:
        """Each adapter's head-dim group (named by the query projection, where head dims are sound) and whole-head
        group (``<query>#heads``); the ``#heads`` of an unsupported adapter and the head linears of a layout no
        adapter knows go to :attr:`left_out`. Nothing is added for an attention whose head linears are ignored."""
        ignored = set(self._ignored)

        def kept(name: str) -> bool:
            return not any(fnmatch.fnmatchcase(name, glob) for glob in ignore)

        for site in sites:
            if site.unsupported is not None:
                if kept(site.heads_name) and site.owner not in ignored:
                    heads = Group(site.heads_name, site.units, site.members, f"{site.kind} heads")
                    self.left_out.append((heads, site.unsupported))
                continue
            if any(m in ignored or m not in self.graph.module2node for m in site.claimed):
                continue
            units = [u for u, ok in (("dims", site.head_dims_sound), ("heads", not site.heads_unsupported)) if ok]
            if site.heads_unsupported and kept(site.heads_name):
                heads = Group(site.heads_name, site.units, site.members, f"{site.kind} heads")
                self.left_out.append((heads, site.heads_unsupported))
            for unit in units:
                name, what = (site.name, "head dims") if unit == "dims" else (site.heads_name, "heads")
                if kept(name):
                    self._roots[name] = site.root
                    self._groups.append(Group(name, site.channels(unit), site.members, f"{site.kind} {what}"))
        for module, unknown in self._unknown.items():
            name = self._names[module]
            if module not in visited and module in self.graph.module2node and module not in ignored and kept(name):
                linear = Group(name, module.out_features, (name,), type(module).__name__)
                self.left_out.append((linear, unknown.reason()))

    def _site(self, name: str) -> tuple[AttentionAdapter, str] | None:
        base = name.removesuffix(HEADS_SUFFIX)
        if base not in self._attention or name not in self._roots:
            return None
        return self._attention[base], "heads" if name.endswith(HEADS_SUFFIX) else "dims"

    @property
    def groups(self) -> list[Group]:
        return list(self._groups)

    def _tp_group(self, name: str) -> Any:
        try:
            root = self._roots[name]
        except KeyError:
            raise PruningError(f"group {name!r} is not a prunable group of this model") from None
        pruner = self.graph.get_pruner_of_module(root)
        channels = pruner.get_out_channels(root)
        return self.graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))

    def channels_of(self, name: str) -> int:
        site = self._site(name)
        if site is not None:
            return site[0].channels(site[1])
        root = self._roots[name]
        return int(self.graph.get_pruner_of_module(root).get_out_channels(root))

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
        tp_group = self._tp_group(name)
        with torch.no_grad():
            bn_scale = self._bn_scale(tp_group, root, channels, scope)
            if scope == "layer":
                grad = getattr(root.weight, "grad", None)
                return GroupTensors(
                    name,
                    _out_rows(root).detach().clone(),
                    grads=None if grad is None else _out_rows(root, grad).detach().clone(),
                    bn_scale=bn_scale,
                    seed=seed,
                )
            weights, grads, with_grads = [], [], True
            for i, (dep, idxs) in enumerate(tp_group):
                module = dep.target.module
                out = self.graph.is_out_channel_pruning_fn(dep.handler)
                rows = _rows_of(module, list(idxs), out)
                if rows is None:
                    continue
                at = torch.as_tensor(list(tp_group[i].root_idxs), dtype=torch.long, device=rows.device)
                weights.append(_scatter_rows(rows, at, channels))
                grad = getattr(module.weight, "grad", None)
                with_grads = with_grads and grad is not None
                if with_grads:
                    grad_rows = _rows_of(module, list(idxs), out, grad)
                    with_grads = grad_rows is not None
                    if grad_rows is not None:
                        grads.append(_scatter_rows(grad_rows, at, channels))
            return GroupTensors(
                name,
                torch.cat(weights, dim=1),
                grads=torch.cat(grads, dim=1) if with_grads and grads else None,
                bn_scale=bn_scale,
                seed=seed,
            )

    def _bn_scale(self, tp_group: Any, root: nn.Module, channels: int, scope: str) -> torch.Tensor | None:
        """|gamma| per channel: the BatchNorm fed directly by ``root`` (scope layer) or every coupled one."""
        total: torch.Tensor | None = None
        for i, (dep, idxs) in enumerate(tp_group):
            module = dep.target.module
            if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.affine:
                continue
            if scope == "layer" and dep.source.module is not root:
                continue
            gamma = module.weight.detach()
            scale = torch.zeros(channels, dtype=torch.float64, device=gamma.device)
            at = torch.as_tensor(list(tp_group[i].root_idxs), dtype=torch.long, device=gamma.device)
            scale[at] = gamma[torch.as_tensor(list(idxs), dtype=torch.long, device=gamma.device)].abs().double()
            total = scale if total is None else total + scale
        return None if total is None else total.float()

    # -- pruning -----------------------------------------------------------------------------------------

    def prune(self, name: str, remove: Sequence[int]) -> None:
        """Remove the channels ``remove`` (indices into the group's root) from every coupled layer."""
        if not remove:
            return
        site = self._site(name)
        if site is not None:
            self._prune_attention(*site, sorted(int(i) for i in remove))
            return
        if name in self._shuffled:
            raise PruningError(
                f"group {name!r}: its channels pass through a channel shuffle (view, transpose, view), whose channel "
                "order DepGraph cannot map; add it to prune.ignore"
            )
        root = self._roots[name]
        pruner = self.graph.get_pruner_of_module(root)
        try:
            group = self.graph.get_pruning_group(root, pruner.prune_out_channels, sorted(int(i) for i in remove))
            group.prune()
        except Exception as exc:
            raise PruningError(f"group {name!r}: torch-pruning failed: {type(exc).__name__}: {exc}") from exc
        retie(self._shared)

    def _prune_attention(self, site: AttentionAdapter, unit: str, remove: list[int]) -> None:
        for projection, idxs in site.prune_indices(unit, remove):
            if projection.axis == "out":
                tp.prune_linear_out_channels(projection.linear, idxs)
            else:
                tp.prune_linear_in_channels(projection.linear, idxs)
        site.prune_tables(unit, remove)
        site.after_pruning(unit, len(remove))


def find_output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """The conv/linear layers whose output channels reach a model output (see :meth:`ModelGraph.output_layers`)."""
    return ModelGraph(model, example_inputs, allow_output_pruning=True).output_layers()
