"""``TracedModel``: one model traced into DepGraph, with its module names and order and its outputs."""

from __future__ import annotations

from typing import Any

from torch import nn

from autoprune.engine._device import to_device, weights_device
from autoprune.engine._graph._group import Group
from autoprune.engine._graph._rows import _ROOT_TYPES
from autoprune.engine._graph._trace import _build_graph, _output_nodes, _unwrapped_parameters
from autoprune.engine._io import output_tensors
from autoprune.errors import PruningError

__all__ = ["TracedModel"]


class TracedModel:
    """The DepGraph of one model instance (:attr:`graph`), the model's outputs on the example inputs, and the
    name and model order of each module; describes torch-pruning's groups as :class:`Group`."""

    def __init__(self, model: nn.Module, example_inputs: Any) -> None:
        self.model = model
        self.example_inputs = example_inputs = to_device(example_inputs, weights_device(model))
        self.names = {m: n for n, m in model.named_modules()}
        self.order = {m: i for i, (_, m) in enumerate(model.named_modules())}
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
        self.output_nodes = _output_nodes(self.graph, out)

    def prunes_out(self, dep: Any) -> bool:
        """Whether a dependency of a torch-pruning group removes its target's output channels."""
        return bool(self.graph.is_out_channel_pruning_fn(dep.handler))

    def out_roots(self, tp_group: Any) -> list[nn.Module]:
        """The conv/linear layers whose output channels ``tp_group`` removes."""
        return [
            dep.target.module
            for dep, _ in tp_group
            if isinstance(dep.target.module, _ROOT_TYPES) and self.prunes_out(dep)
        ]

    def whole_group(self, root: nn.Module) -> Any:
        """torch-pruning's group of every output channel of ``root``."""
        pruner = self.graph.get_pruner_of_module(root)
        channels = pruner.get_out_channels(root)
        return self.graph.get_pruning_group(root, pruner.prune_out_channels, list(range(channels)))

    def describe(self, tp_group: Any) -> Group:
        root = min(self.out_roots(tp_group), key=lambda m: self.order.get(m, 1 << 30))
        members = sorted(
            {dep.target.module for dep, _ in tp_group if isinstance(dep.target.module, nn.Module)} & set(self.names),
            key=lambda m: self.order[m],
        )
        # Unwrapped parameters (class token, position embedding) come first, as they feed the first layers.
        params = sorted(
            {self._param_names[id(d.target.module)] for d, _ in tp_group if id(d.target.module) in self._param_names}
        )
        channels = self.graph.get_pruner_of_module(root).get_out_channels(root)
        return Group(
            name=self.names[root],
            channels=int(channels),
            members=(*params, *(self.names[m] for m in members)),
            layer_type=type(root).__name__,
        )
