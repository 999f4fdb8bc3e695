"""The built-in model zoo: small, torchvision-free models for CPU search and tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from autoprune._registry import Registry, import_object
from autoprune.errors import ConfigError
from autoprune.models._resnet import resnet_small

__all__ = ["MODELS", "build_model", "load_model", "load_weights", "register_model", "resnet_small"]

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("built-in model")
MODELS.register("resnet_small")(resnet_small)


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``builder(in_channels=..., num_classes=...) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def build_model(name: str, *, in_channels: int, num_classes: int) -> nn.Module:
    return MODELS.get(name, key="model.builtin")(in_channels=in_channels, num_classes=num_classes)


def load_model(
    *, builtin: str | None, factory: str | None, in_channels: int, num_classes: int, weights: Path | None = None
) -> nn.Module:
    """Build the base model from the zoo or a ``"pkg.module:function"`` factory, then load ``weights`` if given."""
    if builtin is not None:
        model = build_model(builtin, in_channels=in_channels, num_classes=num_classes)
    elif factory is not None:
        fn = import_object(factory, key="model.factory")
        if not callable(fn):
            raise ConfigError(f"{factory!r} is not callable", key="model.factory")
        model = fn()
        if not isinstance(model, nn.Module):
            raise ConfigError(
                f"factory {factory!r} returned {type(model).__name__}; expected a torch.nn.Module", key="model.factory"
            )
    else:
        raise ConfigError("set one of model.builtin or model.factory", key="model")
    if weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model: nn.Module, path: Path, *, key: str = "model.weights") -> None:
    """Load a state_dict with ``torch.load(weights_only=True)``: no pickled code runs."""
    if not Path(path).is_file():
        raise ConfigError(f"weights file {str(path)!r} does not exist", key=key)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unreadable file fails in many ways inside torch
        raise ConfigError(f"cannot load weights {str(path)!r} as a state_dict: {exc}".splitlines()[0], key=key) from None
    if not isinstance(state, dict):
        raise ConfigError(f"weights {str(path)!r} hold a {type(state).__name__}, expected a state_dict", key=key)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise ConfigError(f"weights {str(path)!r} do not fit the model: {detail[:300]}", key=key) from None
