"""The dependency-graph wrapper: the only module that imports torch_pruning.

Everything outside speaks of *groups* (sets of coupled channels named by their root module), never of
torch-pruning's own Group/Dependency objects.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch_pruning as tp
from torch import nn

from autoprune.criteria import GroupTensors
from autoprune.engine._attention import HEADS_SUFFIX, AttentionSite, find_attention_sites
from autoprune.engine._device import to_device, weights_device
from autoprune.engine._io import call_model, output_tensors
from autoprune.errors import PruningError

__all__ = [
    "Group",
    "ModelGraph",
    "check_ignore_globs",
    "count_macs_params",
    "find_output_layers",
    "matching_modules",
]

_ROOT_TYPES = (tp.ops.TORCH_CONV, tp.ops.TORCH_LINEAR)


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


def matching_modules(model: nn.Module, globs: Sequence[str]) -> dict[str, list[str]]:
    """For each glob, the qualified module names it matches (a module also matches through an ancestor)."""
    names = [n for n, _ in model.named_modules() if n]
    found: dict[str, list[str]] = {}
    for glob in globs:
        hits = []
        for name in names:
            parts = name.split(".")
            prefixes = [".".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatchcase(p, glob) for p in prefixes):
                hits.append(name)
        found[glob] = hits
    return found


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
        self.example_inputs = example_inputs = to_device(example_inputs, weights_device(model))
        self._names = {m: n for n, m in model.named_modules()}
        self._order = {m: i for i, (_, m) in enumerate(model.named_modules())}
        ignored_names = {n for hits in matching_modules(model, ignore).values() for n in hits}
        modules = dict(model.named_modules())
        self._ignored = [modules[n] for n in sorted(ignored_names)]
        self._attention = find_attention_sites(model)
        unwrapped = _unwrapped_parameters(model)
        self._param_names = {id(p): n for n, p in model.named_parameters() if any(p is q for q, _ in unwrapped)}
        outputs: list[Any] = []
        was_training = model.training
        model.eval()
        handle = model.register_forward_hook(lambda _m, _args, out: outputs.append(out))
        try:
            # forward_fn: DepGraph's own first try, model(*inputs), would unpack a lone tensor's batch dimension.
            self.graph = tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, forward_fn=call_model, unwrapped_parameters=unwrapped
            )
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
        for tp_group in self.graph.get_all_groups(ignored_layers=self._ignored, root_module_types=_ROOT_TYPES):
            reaches_output = self._reaches_output(tp_group)
            if reaches_output and not allow_output_pruning:
                continue
            group = self._describe(tp_group)
            found = self._attention_groups(group.name) if group.name in self._attention else [group]
            for item in found:
                if not any(fnmatch.fnmatchcase(item.name, glob) for glob in ignore):
                    self._roots[item.name] = modules[group.name]
                    self._groups.append(item)
                    if reaches_output:
                        self._output_groups.add(item.name)
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
        for tp_group in self.graph.get_all_groups(ignored_layers=[], root_module_types=_ROOT_TYPES):
            if self._reaches_output(tp_group):
                found.update(
                    dep.target.module
                    for dep, _ in tp_group
                    if isinstance(dep.target.module, _ROOT_TYPES) and self.graph.is_out_channel_pruning_fn(dep.handler)
                )
        return [self._names[m] for m in sorted(found & set(self._names), key=lambda m: self._order[m])]

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

    def _attention_groups(self, name: str) -> list[Group]:
        """The head-dim group (named by ``qkv``) and the whole-head group (``qkv#heads``) of an attention."""
        site = self._attention[name]
        members = (site.qkv_name, site.proj_name)
        kind = type(site.owner).__name__
        return [
            Group(name, site.head_dim, members, f"{kind} head dims"),
            Group(name + HEADS_SUFFIX, site.num_heads, members, f"{kind} heads"),
        ]

    def _site(self, name: str) -> tuple[AttentionSite, str] | None:
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
            return site[0].num_heads if site[1] == "heads" else site[0].head_dim
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
            return GroupTensors(name, site[0].rows(site[1], scope), seed=seed)
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
        root = self._roots[name]
        pruner = self.graph.get_pruner_of_module(root)
        try:
            group = self.graph.get_pruning_group(root, pruner.prune_out_channels, sorted(int(i) for i in remove))
            group.prune()
        except Exception as exc:
            raise PruningError(f"group {name!r}: torch-pruning failed: {type(exc).__name__}: {exc}") from exc

    def _prune_attention(self, site: AttentionSite, unit: str, remove: list[int]) -> None:
        qkv_idxs, proj_idxs = site.indices(unit, remove)
        tp.prune_linear_out_channels(site.qkv, qkv_idxs)
        tp.prune_linear_in_channels(site.proj, proj_idxs)
        site.after_pruning(unit, len(remove))


def _output_nodes(graph: Any, outputs: list[torch.Tensor]) -> set[Any]:
    """The DepGraph nodes that produce the model's outputs.

    DepGraph makes an ``_OutputOp`` node of an output computed by a function (interpolate, flatten, add); an
    output returned straight from a layer (``return self.head(x)``) is that layer's node, found by its grad_fn.
    """
    grad_fns = {t.grad_fn for t in outputs if t.grad_fn is not None}
    return {
        node
        for node in graph.module2node.values()
        if node.type == tp.ops.OPTYPE.OUTPUT or (node.grad_fn is not None and node.grad_fn in grad_fns)
    }


def find_output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """The conv/linear layers whose output channels reach a model output (see :meth:`ModelGraph.output_layers`)."""
    return ModelGraph(model, example_inputs, allow_output_pruning=True).output_layers()


def _unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Parameters outside any layer torch-pruning knows (a ViT's class token and position embedding), each
    with the dimension that holds channels: the last one longer than 1, as for ``[1, tokens, dim]``."""
    registered = tp.DependencyGraph().REGISTERED_PRUNERS
    owned: set[int] = set()
    for module in model.modules():
        op_type = tp.ops.module2type(module)
        if op_type in registered and op_type != tp.ops.OPTYPE.ELEMENTWISE:
            owned.update(id(p) for p in module.parameters())
    found = []
    for _, param in model.named_parameters():
        dims = [i for i, size in enumerate(param.shape) if size > 1]
        if id(param) not in owned and dims:
            found.append((param, dims[-1]))
    return found


def _scatter_rows(rows: torch.Tensor, at: torch.Tensor, channels: int) -> torch.Tensor:
    full = torch.zeros(channels, rows.shape[1], dtype=rows.dtype, device=rows.device)
    full[at] = rows
    return full


def _out_rows(module: nn.Module, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Output-channel rows of ``weight`` (default: the module's weight; pass ``.grad`` for its gradient)."""
    if weight is None:
        weight = cast(torch.Tensor, module.weight)  # torch types Module attributes as Tensor | Module
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return weight.transpose(0, 1).flatten(1)
    return weight.flatten(1)


def _rows_of(
    module: nn.Module, idxs: list[int], out: bool, weight: torch.Tensor | None = None
) -> torch.Tensor | None:
    """The rows of ``weight`` (default: the module's own) that the channels ``idxs`` own, or None."""
    if weight is None:
        weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor):
        return None
    index = torch.as_tensor(idxs, dtype=torch.long, device=weight.device)
    if weight.dim() == 1:
        return weight[index].unsqueeze(1).float()
    if isinstance(module, _ROOT_TYPES):
        if out:
            return _out_rows(module, weight)[index].float()
        if getattr(module, "groups", 1) != 1:
            return None  # grouped in-channels are scored through the out-channel dependency
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            return weight.flatten(1)[index].float()
        return weight.transpose(0, 1).flatten(1)[index].float()
    return None


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """Multiply-accumulates of one forward on ``example_inputs`` (moved to the model's device), and the
    parameter count."""
    was_training = model.training
    try:
        macs, params = tp.utils.count_ops_and_params(model, to_device(example_inputs, weights_device(model)))
    finally:
        model.train(was_training)
    return int(macs), int(params)


def check_ignore_globs(model: nn.Module, globs: Sequence[str]) -> list[str]:
    """The globs that match no module (nor an attention's ``qkv#heads`` group)."""
    heads = [name + HEADS_SUFFIX for name in find_attention_sites(model)]
    return [
        g
        for g, hits in matching_modules(model, globs).items()
        if not hits and not any(fnmatch.fnmatchcase(h, g) for h in heads)
    ]

