"""Everything a trial needs, built once per process: data, base model, groups, base figures, space."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

from autoprune.config import Config, SpaceSpec
from autoprune.criteria import needs_gradients
from autoprune.data import DataBundle, load_data
from autoprune.engine import (
    Group,
    PruneReport,
    apply_plan,
    UnsupportedGroupWarning,
    check_ignore_globs,
    compressed_bytes,
    count_macs_params,
    count_nonzero_params,
    find_groups,
    sparsifiable_layers,
)
from autoprune.errors import ConfigError
from autoprune.evaluate import Evaluator, fixed_batches, train
from autoprune.metrics import Metric, resolve_metric
from autoprune.models import load_model, load_weights
from autoprune.plan import PruningPlan
from autoprune.space import SearchSpace, SparsitySpace, config_list_bounds, load_space_spec

__all__ = ["Resolved", "Task", "atomic_write_bytes", "check_output_writable", "prepare_task", "resolve"]

Log = Callable[[str], None]


@dataclass
class Task:
    config: Config
    data: DataBundle
    base_model: nn.Module
    example_inputs: torch.Tensor
    groups: list[Group]
    base_macs: int
    base_params: int
    base_metric: float
    evaluator: Evaluator
    space: SearchSpace
    gradient_batches: list[Any] = field(default_factory=list)  # for criteria that need gradients (taylor)
    layers: list[str] = field(default_factory=list)  # layers unstructured pruning may sparsify
    base_nonzero_params: int = 0
    base_compressed_bytes: int = 0  # gzip of the base state_dict; measured when prune.mode is unstructured

    @property
    def base_counts(self) -> tuple[int, int]:
        return self.base_macs, self.base_params

    def prune(self, plan: PruningPlan) -> tuple[nn.Module, PruneReport]:
        """``plan`` applied to a copy of the base model (with this task's gradient batches, for taylor)."""
        return apply_plan(
            self.base_model, self.example_inputs, plan, base_counts=self.base_counts, gradient_batches=self.gradient_batches
        )


def atomic_write_bytes(path: Path, payload: bytes) -> None:
    """Write to a temp file in the same folder, then rename: a kill never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _base_key(config: Config) -> str:
    """What the cached base weights depend on; any change retrains."""
    relevant = {
        "model": config.model.model_dump(mode="json"),
        "data": config.data.model_dump(mode="json"),
        "base_training": config.base_training.model_dump(mode="json"),
        "seed": config.study.seed,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def _build_model(config: Config, data: DataBundle) -> nn.Module:
    """The base architecture, with the configured weights if any; writes nothing."""
    in_channels = (config.model.input_shape or list(data.input_shape or ()) or [3])[0]
    num_classes = config.model.num_classes or data.num_classes
    if num_classes is None and config.model.builtin is not None:
        raise ConfigError("the data set does not say its number of classes; set model.num_classes", key="model")
    torch.manual_seed(config.study.seed)  # the base model's initial weights follow the study seed
    model = load_model(
        builtin=config.model.builtin,
        factory=config.model.factory,
        in_channels=int(in_channels),
        num_classes=int(num_classes or 0),
        weights=config.model.weights,
        file=config.model.file,
        trust_pickle=config.model.trust_pickle,
        torchvision=config.model.torchvision,
    )
    return model.eval()


def _trained_base(config: Config, model: nn.Module, data: DataBundle, log: Log) -> nn.Module:
    """The configured weights (or whole pickled model), else the cached base weights, else train once and cache."""
    if config.model.weights is not None or config.model.file is not None:
        return model
    cache, meta = config.output / "base.pt", config.output / "base.json"
    key = _base_key(config)
    # One trainer at a time: a second worker waits, then finds the cache.
    with FileLock(str(config.output / ".base.lock")):
        if cache.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
            load_weights(model, cache, key="base model cache")
            log(f"loaded cached base weights from {cache}")
            return model.eval()
        log(f"training the base model for {config.base_training.epochs} epochs")
        train(
            model,
            data.train,
            epochs=config.base_training.epochs,
            lr=config.base_training.lr,
            momentum=config.base_training.momentum,
            weight_decay=config.base_training.weight_decay,
            seed=config.study.seed,
        )
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        atomic_write_bytes(cache, buffer.getvalue())
        atomic_write_bytes(meta, json.dumps({"key": key}).encode())
    return model.eval()


def check_output_writable(output: Path) -> None:
    """The run folder is a folder we may create or write; checked before anything is written."""
    if output.exists() and not output.is_dir():
        raise ConfigError(f"{str(output)!r} exists and is not a folder", key="output")
    parent = output
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the output folder {str(output)!r}: {str(parent)!r} is not writable", key="output")


@dataclass
class Resolved:
    """A config checked against the real model and data, before anything is written."""

    spec: SpaceSpec
    data: DataBundle
    model: nn.Module
    example_inputs: torch.Tensor
    metric: Metric
    groups: list[Group]  # empty when prune.mode is unstructured alone
    bounds: dict[str, tuple[float, float]]  # per-group ratio bounds from an NNI config_list; empty: all groups
    warnings: list[str]
    layers: list[str] = field(default_factory=list)  # sparsifiable layers when prune.mode includes unstructured


def resolve(config: Config) -> Resolved:
    """Check everything ``search`` needs (preset, data, metric, model, weights, groups, output folder)."""
    check_output_writable(config.output)
    spec = load_space_spec(config.prune.search_space)
    metric = resolve_metric(config.metric)
    data = load_data(
        builtin=config.data.builtin,
        factory=config.data.factory,
        batch_size=config.data.batch_size,
        val_fraction=config.data.val_fraction,
        seed=config.study.seed,
        options=dict(config.data.options),
    )
    input_shape = config.model.input_shape or (list(data.input_shape) if data.input_shape else None)
    if input_shape is None:
        raise ConfigError("the data set does not give an input shape; set model.input_shape", key="model.input_shape")
    model = _build_model(config, data)
    example_inputs = torch.zeros(1, *input_shape)
    notes = [f"prune.ignore: glob {glob!r} matches no module" for glob in check_ignore_globs(model, config.prune.ignore)]
    layers: list[str] = []
    if config.prune.unstructured_mode:
        layers = sparsifiable_layers(model, config.prune.ignore)
        if not layers:
            raise ConfigError("the model has no conv or linear layer to sparsify (check prune.ignore)", key="prune.ignore")
    if not config.prune.structured:
        return Resolved(spec, data, model, example_inputs, metric, [], {}, notes, layers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsupportedGroupWarning)
        groups = find_groups(model, example_inputs, ignore=config.prune.ignore)
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
    return Resolved(spec, data, model, example_inputs, metric, groups, bounds, notes, layers)


def prepare_task(config: Config, log: Log = lambda _: None, *, resolved: Resolved | None = None) -> Task:
    """Resolve the config (writing nothing) unless given ``resolved``, then create the run folder and produce
    the base model."""
    resolved = resolved or resolve(config)
    for warning in resolved.warnings:
        log(f"warning: {warning}")
    config.output.mkdir(parents=True, exist_ok=True)
    base = _trained_base(config, resolved.model, resolved.data, log)
    macs, params = count_macs_params(base, resolved.example_inputs)
    evaluator = Evaluator(train_loader=resolved.data.train, val_loader=resolved.data.val, metric=resolved.metric)
    base_metric = evaluator.score(base)
    bounds = resolved.bounds
    space = SearchSpace(
        spec=resolved.spec,
        groups=tuple(g.name for g in resolved.groups if not bounds or g.name in bounds),
        ratio=tuple(config.prune.ratio),  # type: ignore[arg-type]
        criteria=tuple(config.prune.criteria),
        round_to=config.prune.round_to,
        scope=config.prune.criteria_scope,
        bounds=bounds,
        sparsity=_sparsity_space(config, resolved),
    )
    # Fixed batches in dataset order, so a gradient criterion scores the same plan the same way every time.
    batches = (
        fixed_batches(resolved.data.train, config.prune.gradient_batches)
        if any(needs_gradients(c) for c in config.prune.criteria)
        else []
    )
    return Task(
        config,
        resolved.data,
        base,
        resolved.example_inputs,
        resolved.groups,
        macs,
        params,
        base_metric,
        evaluator,
        space,
        batches,
        layers=resolved.layers,
        base_nonzero_params=count_nonzero_params(base),
        base_compressed_bytes=compressed_bytes(base) if config.prune.unstructured_mode else 0,
    )


def _sparsity_space(config: Config, resolved: Resolved) -> SparsitySpace | None:
    if not config.prune.unstructured_mode:
        return None
    return SparsitySpace(
        layers=tuple(resolved.layers),
        bounds=tuple(config.prune.unstructured.sparsity),  # type: ignore[arg-type]
        methods=tuple(config.prune.unstructured.methods),
        granularity=resolved.spec.ratio,
        stage_depth=resolved.spec.stage_depth,
    )
