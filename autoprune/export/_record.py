"""What ``export.json`` records: the architecture, the versions, the sparsity and the figures of one export; and
the probe batch the reload checks compare outputs on."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import torch
from optuna.trial import FrozenTrial

from autoprune._version import __version__
from autoprune.config import Config
from autoprune.engine import PruneReport, compressed_bytes, count_nonzero_params, has_labels, to_device, without_labels
from autoprune.export._load import EXAMPLE_INPUTS_FILE
from autoprune.export._recover import Recovered
from autoprune.export._select import Selection
from autoprune.plan import PruningPlan
from autoprune.study import Task, factory_search_paths, first_channels

__all__ = ["PROBE_SIZE", "Latencies", "architecture_record", "config_hash", "export_record", "probe_batch"]

PROBE_SIZE = 16


def config_hash(config: Config) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_pruning": version("torch-pruning"),
        "autoprune": __version__,
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }


def _same_form(inputs: Any, example: Any) -> bool:
    """Whether a batch's ``inputs`` can stand in for the example inputs: the same nesting (tensor, tuple, dict
    keys) and, tensor by tensor, the same dtype kind and per-sample shape."""
    if isinstance(example, torch.Tensor):
        return (
            isinstance(inputs, torch.Tensor)
            and inputs.shape[1:] == example.shape[1:]
            and inputs.is_floating_point() == example.is_floating_point()
        )
    if isinstance(example, dict):
        return (
            isinstance(inputs, dict)
            and inputs.keys() == example.keys()
            and all(_same_form(inputs[k], v) for k, v in example.items())
        )
    if isinstance(example, (tuple, list)):
        return (
            isinstance(inputs, (tuple, list))
            and len(inputs) == len(example)
            and all(_same_form(a, b) for a, b in zip(inputs, example, strict=True))
        )
    return type(inputs) is type(example)


def _first_rows(inputs: Any, count: int) -> Any:
    """The first ``count`` samples of every tensor in ``inputs`` (any nesting), copied to the CPU."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:count].detach().cpu().clone()
    if isinstance(inputs, dict):
        return {k: _first_rows(v, count) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(_first_rows(v, count) for v in inputs)
    return inputs


def probe_batch(task: Task, loader: Any) -> Any:
    """A fixed batch for the reload checks: the first evaluation batch's inputs when they have the example
    inputs' form (a real ``(inputs, targets)`` batch, or a dict batch without its ``labels``), else the example
    inputs themselves."""
    example = to_device(task.base.example_inputs, "cpu")
    for batch in loader:
        if isinstance(batch, (tuple, list)) and batch and _same_form(batch[0], example):
            return _first_rows(batch[0], PROBE_SIZE)
        if has_labels(batch) and _same_form(without_labels(batch), example):  # a Hugging Face dict batch
            return _first_rows(to_device(without_labels(batch), "cpu"), PROBE_SIZE)
        break
    if isinstance(example, torch.Tensor) and example.is_floating_point():
        return torch.randn(PROBE_SIZE, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    return _first_rows(example, PROBE_SIZE)


def _input_shapes(inputs: Any) -> Any:
    """Each example tensor's shape, in the inputs' own nesting (a list, a list of them, or a dict)."""
    if isinstance(inputs, torch.Tensor):
        return list(inputs.shape)
    if isinstance(inputs, dict):
        return {k: _input_shapes(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return [_input_shapes(v) for v in inputs]
    return type(inputs).__name__


def architecture_record(task: Task, channels: dict[str, int]) -> dict[str, Any]:
    cfg = task.config
    example = task.base.example_inputs
    return {
        "builtin": cfg.model.builtin,
        "factory": cfg.model.factory,
        "options": dict(cfg.model.options),
        "torchvision": cfg.model.torchvision,
        "file": str(cfg.model.file) if cfg.model.file is not None else None,
        # Where the factory was imported from (the config's folder, the working directory): autoprune.load looks there.
        "factory_paths": [str(p.resolve()) for p in factory_search_paths(cfg)] if cfg.model.factory else [],
        "in_channels": first_channels(example, task.data.input_shape),
        "num_classes": int(cfg.model.num_classes or task.data.num_classes or 0),
        # The shorthand's per-sample shape; null for the inputs of a model.example_inputs factory.
        "input_shape": list(example.shape[1:]) if cfg.model.example_inputs is None else None,
        "example_inputs": {
            "file": EXAMPLE_INPUTS_FILE,
            "spec": cfg.model.example_inputs,
            "shapes": _input_shapes(example),
        },
        "channels": channels,
    }


def _sparsity_record(task: Task, model: torch.nn.Module, report: PruneReport, recovered: Recovered) -> dict[str, Any]:
    """Non-zero parameters and the gzip size of the weights, before and after; the sparsity of each layer."""
    nonzero, size = count_nonzero_params(model), compressed_bytes(model)
    base_size = task.base.compressed_bytes or compressed_bytes(task.base.model)
    return {
        "nonzero_params": {
            "before": report.nonzero_params_before,
            "after": nonzero,
            "relative": nonzero / report.nonzero_params_before,
        },
        "compressed_bytes": {
            "before": base_size,
            "after": size,
            "relative": size / base_size,
            "format": "gzip of torch.save(state_dict)",
        },
        "sparsity": recovered.sparsity,
    }


@dataclass(frozen=True)
class Latencies:
    """The recovered model's latency, before and after: on the CPU, on the run's device, at the search's settings."""

    on_cpu: dict[str, Any]
    on_device: dict[str, Any] | None  # None when the run's device is the CPU
    search: dict[str, Any] | None  # None when the search measured no latency


def export_record(
    task: Task,
    trial: FrozenTrial,
    selection: Selection,
    plan: PruningPlan,
    model: torch.nn.Module,
    recovered: Recovered,
    latencies: Latencies,
    artifacts: dict[str, Any],
) -> dict[str, Any]:
    """What ``export.json`` holds."""
    config, runtime, report = task.config, task.runtime, recovered.report
    ecfg = config.export
    return {
        "trial": trial.number,
        "selection": selection.describe(),
        "study": config.study_name,
        "plan": plan.to_dict(),
        "config_hash": config_hash(config),
        "channels": {name: list(pair) for name, pair in report.channels.items()},
        "macs": {"before": report.macs_before, "after": report.macs_after, "relative": report.macs_ratio},
        "params": {"before": report.params_before, "after": report.params_after, "relative": report.params_ratio},
        **_sparsity_record(task, model, report, recovered),
        "metric": {
            "name": config.metric,
            "split": recovered.split,
            **recovered.metrics,
            "search_validation": trial.values[0],
        },
        "latency": latencies.on_cpu,
        "latency_on_device": latencies.on_device,  # null when the run's device is the CPU
        "latency_search": latencies.search,  # null when the search measured no latency
        "runtime": {"device": runtime.device, "precision": runtime.precision, "channels_last": runtime.channels_last},
        "recovery": {
            "epochs": ecfg.epochs,
            "lr": ecfg.lr,
            "schedule": {
                **ecfg.schedule.model_dump(mode="json"),
                "fractions": recovered.fractions,
                "steps_reached": recovered.steps,
            },
            "seconds": recovered.seconds,
            # finetune.reconstruct (as the search scored it) and export.reconstruct: calibration batches, and each
            # refitted layer's relative output error before and after; null when off.
            "reconstruct": recovered.reconstruction,
        },
        "artifacts": artifacts,
        "versions": _versions(),
    }
