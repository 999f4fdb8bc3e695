"""A config checked against the real model, data and metric, before anything is written."""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autoprune._registry import Registry, one_line
from autoprune.config import Config, SpaceSpec
from autoprune.data import DataBundle, load_data
from autoprune.engine import (
    Group,
    UnsupportedGroupWarning,
    call_model,
    check_ignore_globs,
    find_groups,
    sparsifiable_layers,
)
from autoprune.errors import AutopruneError, ConfigError, did_you_mean
from autoprune.evaluate import COSTS, LATENCY_BACKENDS, LOSSES, Runtime, needs_latency_table, resolve_runtime
from autoprune.metrics import Metric, resolve_metric
from autoprune.space import apply_tie, config_list_bounds, get_ratio_schedule, load_space_spec
from autoprune.study._base import build_base_model
from autoprune.study._inputs import describe_inputs, first_channels, load_example_inputs
from autoprune.study._io import TABLE_FOLDER, check_output_writable

__all__ = ["Resolved", "check_metric_value", "check_registered_names", "factory_search_paths", "resolve"]


@dataclass
class Resolved:
    """A config checked against the real model and data, before anything is written."""

    spec: SpaceSpec
    data: DataBundle
    model: nn.Module
    example_inputs: Any  # a tensor, a tuple (positional) or a dict (keyword arguments), on the runtime's device
    metric: Metric
    groups: list[Group]  # empty when prune.mode is unstructured alone
    bounds: dict[str, tuple[float, float]]  # per-group ratio bounds from an NNI config_list; empty: all groups
    warnings: list[str]
    layers: list[str] = field(default_factory=list)  # sparsifiable layers when prune.mode includes unstructured
    runtime: Runtime = field(default_factory=Runtime)  # where the model sits (it is already there) and autocast


def factory_search_paths(config: Config) -> list[Path]:
    """Where ``"module:fn"`` factories are imported from before ``sys.path``: the config file's folder, then the
    working directory (as ``python -m`` does)."""
    paths = [config.source.parent] if config.source is not None else []
    return [*paths, Path.cwd()]


def _registered(name: str, registry: Registry[Any], key: str) -> None:
    """``name`` is ``"pkg.module:fn"`` (imported where it is used) or registered; else one line naming ``key``."""
    if ":" in name or name in registry:
        return
    known = registry.names()
    raise ConfigError(
        f"unknown {registry.kind} {name!r}{did_you_mean(name, known)}; known: {', '.join(known)} or 'pkg.module:fn'",
        key=key,
    )


def check_registered_names(config: Config) -> None:
    """The registered names a config gives (losses, the latency backend, the cost objective) exist. The config checks only their form:
    the registries live with the code that uses them, above the config, and a user's entry points may add names."""
    _registered(config.finetune.loss, LOSSES, "finetune.loss")
    if config.export.loss is not None:
        _registered(config.export.loss, LOSSES, "export.loss")
    _registered(config.latency.backend, LATENCY_BACKENDS, "latency.backend")
    _registered(config.objectives[1], COSTS, "objectives[1]")


def _first_batch(config: Config, data: DataBundle) -> Any:
    for batch in data.val:
        return batch
    key = "data.factory" if config.data.factory is not None else "data.builtin"
    raise ConfigError("the validation loader yields no batch", key=key)


def _batch_inputs(batch: Any) -> torch.Tensor | None:
    """The inputs of an ``(inputs, targets, ...)`` batch, when they are one tensor; else None (no shape to check)."""
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    return None


def _input_shape(config: Config, data: DataBundle, inputs: torch.Tensor | None) -> list[int]:
    """``model.input_shape``, which must agree with the data's own sample shape; or the data's shape."""
    declared = config.model.input_shape
    sources = {
        "the data set's input_shape": list(data.input_shape) if data.input_shape else None,
        "the first validation batch's sample shape": list(inputs.shape[1:]) if inputs is not None else None,
    }
    if declared is None:
        found = next((shape for shape in sources.values() if shape), None)
        if found is None:
            raise ConfigError("the data set does not give an input shape; set model.input_shape", key="model.input_shape")
        return found
    for origin, shape in sources.items():
        if shape is not None and shape != list(declared):
            raise ConfigError(f"{list(declared)} disagrees with {origin} {shape}", key="model.input_shape")
    return list(declared)


def _check_forward(model: nn.Module, example_inputs: Any, key: str) -> None:
    try:
        with torch.no_grad():
            call_model(model, example_inputs)
    except Exception as exc:  # the user's forward fails in any way on a wrong rank, channel count or keyword
        if isinstance(example_inputs, torch.Tensor):
            what = f"an example input of shape {list(example_inputs.shape)}"
        else:
            what = f"the example inputs ({describe_inputs(example_inputs)})"
        raise ConfigError(f"the model fails on {what}: {one_line(exc)}", key=key) from None


def _example_inputs(config: Config, data: DataBundle, batch: Any, paths: list[Path]) -> tuple[Any, int, str]:
    """The example inputs (on the CPU), the channel count a built-in model is built for, and the key they come
    from: the ``model.example_inputs`` factory's, else zeros of ``model.input_shape`` (checked against the data)."""
    spec = config.model.example_inputs
    if spec is not None:
        inputs = load_example_inputs(spec, config.model.options, search_paths=paths)
        return inputs, first_channels(inputs, data.input_shape), "model.example_inputs"
    input_shape = _input_shape(config, data, _batch_inputs(batch))
    return torch.zeros(1, *input_shape), int(input_shape[0]), "model.input_shape"


def check_metric_value(value: Any, spec: str, on: str) -> float:
    """``value`` as a float when the metric returned one number; else a ConfigError at ``metric``."""
    if (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, np.ndarray) and value.size == 1):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"metric {spec!r} returned {type(value).__name__} {value!r:.60} on {on}; expected a number", key="metric")
    return float(value)


def _check_metric(metric: Metric, spec: str, model: nn.Module, batch: Any) -> None:
    """The metric runs on one validation batch of the model as built and returns a number."""
    was_training = model.training
    try:
        with torch.no_grad():
            value = metric(model, [batch])
    except AutopruneError:
        raise
    except Exception as exc:  # user code
        raise ConfigError(f"metric {spec!r} raised {one_line(exc)} on one validation batch", key="metric") from None
    finally:
        model.train(was_training)
    check_metric_value(value, spec, "one validation batch")


def resolve(config: Config) -> Resolved:
    """Check everything ``search`` needs (device, preset, data, metric, model, weights, groups, output folder),
    running the model and the metric once on real data, on the configured device; writes nothing.

    The runtime is resolved here, once per process: a device that is not there is one line before anything
    is loaded. The model is placed on it, and the example inputs made there."""
    check_registered_names(config)
    runtime = resolve_runtime(config.runtime)
    check_output_writable(config.output)
    if needs_latency_table(config):  # a file where the tables go: one line now, not after the base is trained
        check_output_writable(config.output / TABLE_FOLDER)
    spec = apply_tie(load_space_spec(config.prune.search_space), config.prune.tie)
    get_ratio_schedule(spec)  # a preset naming no registered ratio schedule is one line, before any data loads
    paths = factory_search_paths(config)
    metric = resolve_metric(config.metric, search_paths=paths)
    data = load_data(
        builtin=config.data.builtin,
        factory=config.data.factory,
        batch_size=config.data.batch_size,
        val_fraction=config.data.val_fraction,
        seed=config.study.seed,
        options=dict(config.data.options),
        search_paths=paths,
    )
    batch = _first_batch(config, data)
    example_inputs, in_channels, inputs_key = _example_inputs(config, data, batch, paths)
    model = runtime.place(build_base_model(config, data, in_channels, paths))
    example_inputs = runtime.to_device(example_inputs)
    with runtime.autocast():
        _check_forward(model, example_inputs, inputs_key)
        _check_metric(metric, config.metric, model, runtime.to_device(batch))
    notes = [f"prune.ignore: glob {glob!r} matches no module" for glob in check_ignore_globs(model, config.prune.ignore)]
    layers: list[str] = []
    if config.prune.unstructured_mode:
        layers = sparsifiable_layers(model, config.prune.ignore)
        if not layers:
            raise ConfigError("the model has no conv or linear layer to sparsify (check prune.ignore)", key="prune.ignore")
    if not config.prune.structured:
        return Resolved(spec, data, model, example_inputs, metric, [], {}, notes, layers, runtime)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsupportedGroupWarning)
        groups = find_groups(
            model, example_inputs, ignore=config.prune.ignore, allow_output_pruning=config.prune.allow_output_pruning
        )
    for warning in caught:  # one line each, through the same log as the rest of the run
        if issubclass(warning.category, UnsupportedGroupWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if not groups:
        raise ConfigError("the model has no prunable group (check prune.ignore)", key="prune.ignore")
    bounds: dict[str, tuple[float, float]] = {}
    if config.prune.nni_config_list is not None:
        module_types = {n: type(m).__name__ for n, m in model.named_modules() if n}
        bounds = config_list_bounds(config.prune.nni_config_list, groups, module_types, tuple(config.prune.ratio))  # type: ignore[arg-type]
    return Resolved(spec, data, model, example_inputs, metric, groups, bounds, notes, layers, runtime)
