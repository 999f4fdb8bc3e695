"""Tracing a model into torch-pruning's DepGraph (cut at channel shuffles when needed), and counting MACs."""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from autoprune.engine._device import to_device, weights_device
from autoprune.engine._graph._conv1d import has_conv1d, linearize_conv1d
from autoprune.engine._io import call_model, output_tensors


class _Cut:
    """An index mapping that maps every index to nothing: DepGraph stops a group there."""

    def __call__(self, idxs: Any) -> list[Any]:
        return []


class _DependencyGraph(tp.DependencyGraph):
    """DepGraph that, with ``cut_shuffles``, is cut at every channel shuffle: a 4-d view to 5-d followed by a
    transpose of dims 1 and 2 (and a view back). No index is mapped through one; :attr:`shuffles` counts them."""

    def __init__(self, cut_shuffles: bool = False) -> None:
        super().__init__()
        self.cut_shuffles = cut_shuffles
        self.cut = _Cut()
        self.shuffles = 0

    def _trace(self, model: nn.Module, example_inputs: Any, forward_fn: Any, output_transform: Any) -> Any:
        # DepGraph maps no index through a reshape when a linear layer's output is 3-d (tokens: [batch, tokens,
        # dim]); those of Swin and ConvNeXt are 4-d ([batch, h, w, dim]), and its channel inference then sees a
        # flatten in each window partition, whose mapping multiplies indices until a group holds millions
        # (minutes per group on swin_t). Channel-last reshapes keep the last dim: no mapping, as for tokens.
        dims: list[int] = []
        hooks = [
            m.register_forward_hook(lambda _m, _args, out: dims.append(out.dim()))
            for m in model.modules()
            if isinstance(m, nn.Linear)
        ]
        try:
            module2node = super()._trace(model, example_inputs, forward_fn, output_transform)
        finally:
            for hook in hooks:
                hook.remove()
        if any(d > 3 for d in dims):
            self._2d_4d = False
        return module2node

    def _build_dependency(self, module2node: Any) -> None:
        # Runs between tracing and DepGraph's shape inference and index mapping, which then skip the shuffles.
        super()._build_dependency(module2node)
        _negative_dim_concats_pass_through(list(module2node.values()))
        if self.cut_shuffles:
            self.shuffles = _cut_shuffles(list(module2node.values()), self.cut)


def _negative_dim_concats_pass_through(nodes: list[Any]) -> None:
    """A concat along a negative dim other than -1 (a KV cache's ``torch.cat([past, new], dim=-2)`` in GPT-2) is
    not along the features, but torch-pruning reads the saved dim as unsigned (2**64 - 2), takes it for one and
    fails sizing its inputs. Such a concat maps channels one to one, as torch-pruning's own non-feature concats."""
    for node in nodes:
        dim = getattr(node.grad_fn, "_saved_dim", None)
        if node.type == tp.ops.OPTYPE.CONCAT and isinstance(dim, int) and dim >= 2**63 and dim - 2**64 != -1:
            node.type = tp.ops.OPTYPE.ELEMENTWISE


def _grad_fn_name(node: Any) -> str:
    name = getattr(node.grad_fn, "name", None)
    return name().lower() if callable(name) else ""


def _cut_shuffles(nodes: list[Any], cut: _Cut) -> int:
    """Cut the graph at each channel shuffle (``x.view(n, g, c // g, h, w).transpose(1, 2)``, then a view or
    reshape back); the views become element-wise nodes that DepGraph's reshape index mapping leaves alone."""
    reshape, elementwise = tp.ops.OPTYPE.RESHAPE, tp.ops.OPTYPE.ELEMENTWISE
    found = 0
    for node in nodes:
        if node.type != reshape or len(node.outputs) != 1 or len(getattr(node.grad_fn, "_saved_self_sym_sizes", ())) != 4:
            continue
        swap = node.outputs[0]
        if "transpose" not in _grad_fn_name(swap) or {swap.grad_fn._saved_dim0, swap.grad_fn._saved_dim1} != {1, 2}:
            continue
        back = swap
        while back.type == elementwise and len(back.outputs) == 1:  # contiguous() is a clone in between
            back = back.outputs[0]
        for view in (node, back):
            if view.type == reshape:
                view.type = elementwise
        for other in (*node.inputs, *node.outputs):
            for dep in other.dependencies:
                if dep.target is node:
                    dep.index_mapping[0] = cut
        found += 1
    return found


def _build_graph(model: nn.Module, example_inputs: Any, unwrapped: list[tuple[nn.Parameter, int]]) -> _DependencyGraph:
    """DepGraph of ``model``; traced again cut at its channel shuffles when DepGraph's own tracing fails.

    torchvision's ShuffleNetV2 (view, transpose, contiguous, view) makes DepGraph's reshape index mapping
    divide by zero; cut there, the groups that do not cross a shuffle prune normally, and those that do are
    known (:meth:`ModelGraph.crosses_shuffle`) and refused.
    """

    def build(cut_shuffles: bool) -> _DependencyGraph:
        graph = _DependencyGraph(cut_shuffles)
        graph.build_dependency(
            model,
            example_inputs=example_inputs,
            forward_fn=call_model,
            output_transform=output_tensors,  # DepGraph traces back from the tensors of a dict / ModelOutput / list
            unwrapped_parameters=list(unwrapped),
        )
        return graph

    try:
        return build(False)
    except Exception as exc:
        try:
            graph = build(True)
        except Exception:
            raise exc from None
        if not graph.shuffles:
            raise
        return graph


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


def count_macs_params(model: nn.Module, example_inputs: Any) -> tuple[int, int]:
    """Multiply-accumulates of one forward on ``example_inputs`` (moved to the model's device), and the
    parameter count."""
    if has_conv1d(model):  # torch-pruning counts no MACs of transformers' Conv1D: count its nn.Linear twin
        model = copy.deepcopy(model)
        linearize_conv1d(model)
    was_training = model.training
    try:
        # torch-pruning prints "No positional inputs found ..., assuming batch size is 1" for every module called
        # with keyword arguments alone (a dict example input); the count is per example either way.
        with contextlib.redirect_stdout(io.StringIO()):
            macs, params = tp.utils.count_ops_and_params(model, to_device(example_inputs, weights_device(model)))
    finally:
        model.train(was_training)
    return int(macs), int(params)
