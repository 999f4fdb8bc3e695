"""The example inputs a model is traced, counted and checked on: zeros of ``model.input_shape`` (the shorthand),
or what the ``model.example_inputs: "pkg.module:fn"`` factory returns (a tensor, a tuple of positional arguments,
or a dict of keyword arguments). Calling the model on them is ``engine.call_model``'s job alone."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from autoprune._registry import call_user, import_callable
from autoprune.engine import output_tensors
from autoprune.errors import ConfigError

__all__ = ["describe_inputs", "factory_options", "first_channels", "load_example_inputs"]

KEY = "model.example_inputs"
EXPECTED = "fn(**model.options) returning a tensor, a tuple (positional) or a dict (keyword arguments)"


def factory_options(fn: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model.options`` that ``fn`` takes by name (all of them when it takes ``**kwargs``): an example-input
    factory shares the model's options (a sequence length, an image size) without having to accept every one."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(options)
    named = {p.name for p in parameters if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}
    return {k: v for k, v in options.items() if k in named}


def load_example_inputs(spec: str, options: Mapping[str, Any], *, search_paths: Iterable[str | Path] = ()) -> Any:
    """What ``spec``'s factory returns, checked to be a tensor, a tuple / list or a dict holding tensors; anything
    else (or a factory that raises) is a ConfigError at ``model.example_inputs``."""
    fn = import_callable(spec, key=KEY, expected=EXPECTED, search_paths=search_paths)
    inputs = call_user(
        fn, what=f"example-input factory {spec!r}", key=KEY, options=factory_options(fn, options), options_key="model.options"
    )
    if isinstance(inputs, Mapping):
        if not all(isinstance(k, str) for k in inputs):
            raise ConfigError(f"{spec!r} returned a dict with keys {list(inputs)!r:.80}; keyword names must be strings", key=KEY)
        inputs = dict(inputs)
    elif isinstance(inputs, list):
        inputs = tuple(inputs)
    elif not isinstance(inputs, (torch.Tensor, tuple)):
        raise ConfigError(f"{spec!r} returned {type(inputs).__name__}; expected {EXPECTED}", key=KEY)
    if not output_tensors(inputs):
        raise ConfigError(f"{spec!r} returned {describe_inputs(inputs)}, which holds no tensor", key=KEY)
    return inputs


def describe_inputs(inputs: Any) -> str:
    """``inputs`` in a few words, for error lines: ``a tensor [1, 3, 8, 8]``, ``a dict: input_ids [1, 16], ...``."""

    def one(value: Any) -> str:
        return str(list(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__

    if isinstance(inputs, torch.Tensor):
        return f"a tensor {one(inputs)}"
    if isinstance(inputs, Mapping):
        return "a dict: " + (", ".join(f"{k} {one(v)}" for k, v in inputs.items()) or "empty")
    if isinstance(inputs, (tuple, list)):
        return f"a {type(inputs).__name__}: " + (", ".join(one(v) for v in inputs) or "empty")
    return f"a {type(inputs).__name__}"


def first_channels(inputs: Any, fallback: tuple[int, ...] | None) -> int:
    """The channel count a built-in model is built for: the example tensor's dimension 1, else the data set's
    first sample dimension (``fallback``), else 0 (a factory ignores it)."""
    if isinstance(inputs, torch.Tensor) and inputs.dim() >= 2:
        return int(inputs.shape[1])
    return int(fallback[0]) if fallback else 0
