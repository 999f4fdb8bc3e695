"""The built-in model zoo (small, torchvision-free models for CPU search and tests) and model loading."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune._registry import Registry, call_user, import_callable
from autoprune.errors import ConfigError
from autoprune.models._chain import conv_chain
from autoprune.models._deeplab import deeplab_small
from autoprune.models._densenet import densenet_small
from autoprune.models._imagenet import mobilenet_v2_like, resnet18_like, vit_ti16
from autoprune.models._mobilenet import mobilenet_small
from autoprune.models._resnet import resnet_small
from autoprune.models._resnet_deep import resnet_depth
from autoprune.models._shufflenet import shufflenet_small
from autoprune.models._vgg import vgg_bn
from autoprune.models._vgg_uneven import vgg_uneven
from autoprune.models._vit import vit_tiny

__all__ = ["MODELS", "build_model", "load_model", "load_weights", "register_model", "resnet_depth"]

ModelBuilder = Callable[..., nn.Module]

MODELS: Registry[ModelBuilder] = Registry("built-in model")
# Each one exercises a coupling pattern DepGraph must follow.
for _name, _builder in {
    "resnet_small": resnet_small,  # residual adds
    "vgg_bn": vgg_bn,  # a plain conv + BN chain
    "vgg_uneven": vgg_uneven,  # a plain chain, narrow layers between wide ones, in named stages
    "mobilenet_small": mobilenet_small,  # inverted residuals, depthwise convs
    "densenet_small": densenet_small,  # concatenation
    "shufflenet_small": shufflenet_small,  # channel split and shuffle
    "vit_tiny": vit_tiny,  # multi-head attention, class token, position embedding
    "deeplab_small": deeplab_small,  # segmentation: ASPP concat of dilated branches, upsampling, cls_conv head
    "conv_chain": conv_chain,
    # 3x224x224 stand-ins for latency work: ResNet-18's and MobileNetV2's layouts, ViT-Ti/16 at half depth.
    "resnet18_like": resnet18_like,
    "mobilenet_v2_like": mobilenet_v2_like,
    "vit_ti16": vit_ti16,  # the channel-pruning tutorial's 100M-parameter 8-conv chain
}.items():
    MODELS.register(_name)(_builder)

PICKLE_EXPLANATION = (
    "loading a whole pickled module runs code stored in the file, so it is refused unless you trust the file: "
    "set model.trust_pickle: true (or save a state_dict and use model.factory or model.builtin with model.weights)"
)


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``builder(in_channels=..., num_classes=...) -> nn.Module`` under ``name``."""
    return MODELS.register(name)


def build_model(name: str, *, in_channels: int, num_classes: int, options: Mapping[str, Any] | None = None) -> nn.Module:
    """The built-in (or registered) model ``name``; ``options`` are further keyword arguments of its builder."""
    return call_user(
        MODELS.get(name, key="model.builtin"),
        what=f"built-in model {name!r}",
        key="model.builtin",
        options=options or {},
        options_key="model.options",
        in_channels=in_channels,
        num_classes=num_classes,
    )


def load_model(
    *,
    builtin: str | None,
    factory: str | None,
    in_channels: int,
    num_classes: int,
    weights: Path | None = None,
    file: Path | None = None,
    trust_pickle: bool = False,
    torchvision: str | None = None,
    options: Mapping[str, Any] | None = None,
    search_paths: Iterable[str | Path] = (),
) -> nn.Module:
    """The base model from exactly one source, then ``weights`` (a state_dict) if given.

    Sources: the zoo (``builtin``), a ``"pkg.module:function"`` factory (imported from ``search_paths`` first),
    a whole module saved with ``torch.save(model)`` (``file``, only with ``trust_pickle``), or a torchvision
    architecture by name (``torchvision``; the optional extra). ``num_classes`` 0 keeps torchvision's own default
    head. ``options`` are keyword arguments for the builder, the factory or torchvision's ``get_model``; anything a
    builder raises is a ConfigError naming its key.
    """
    options = dict(options or {})
    sources = {"builtin": builtin, "factory": factory, "file": file, "torchvision": torchvision}
    chosen = [k for k, v in sources.items() if v is not None]
    if len(chosen) != 1:
        raise ConfigError(
            f"set exactly one of model.builtin, model.factory, model.file, model.torchvision; found {chosen or 'none'}",
            key="model",
        )
    if file is not None and options:
        raise ConfigError("a whole pickled module (model.file) takes no options", key="model.options")
    if builtin is not None:
        model = build_model(builtin, in_channels=in_channels, num_classes=num_classes, options=options)
    elif factory is not None:
        fn = import_callable(factory, key="model.factory", expected="a model factory", search_paths=search_paths)
        model = call_user(fn, what=f"model factory {factory!r}", key="model.factory", options=options, options_key="model.options")
    elif file is not None:
        model = load_pickled_model(file, trust_pickle=trust_pickle)
    else:
        model = _torchvision_model(str(torchvision), num_classes, options)
    if not isinstance(model, nn.Module):
        source = f"factory {factory!r}" if factory is not None else f"built-in model {builtin or torchvision!r}"
        key = "model.factory" if factory is not None else "model.builtin" if builtin is not None else "model.torchvision"
        raise ConfigError(f"{source} returned {type(model).__name__}; expected a torch.nn.Module", key=key)
    if weights is not None:
        load_weights(model, weights)
    return model


def load_pickled_model(path: Path, *, trust_pickle: bool) -> nn.Module:
    """A whole module saved with ``torch.save(model)``; refused without ``trust_pickle`` (unpickling runs code)."""
    if not trust_pickle:
        raise ConfigError(PICKLE_EXPLANATION, key="model.file")
    if not Path(path).is_file():
        raise ConfigError(f"model file {str(path)!r} does not exist", key="model.file")
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # unpickling fails in many ways (a class that no longer imports, a corrupt file)
        raise ConfigError(f"cannot load {str(path)!r}: {exc}".splitlines()[0], key="model.file") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(
            f"{str(path)!r} holds a {type(model).__name__}, expected a whole nn.Module saved with torch.save(model) "
            "(for a state_dict use model.weights)",
            key="model.file",
        )
    return model


def _torchvision_model(name: str, num_classes: int, options: Mapping[str, Any]) -> nn.Module:
    try:
        models = importlib.import_module("torchvision.models")
    except ImportError:
        raise ConfigError(
            "model.torchvision needs the optional extra torchvision, which is not installed: "
            "pip install 'autoprune[torchvision]' (a build matching your torch)",
            key="model.torchvision",
        ) from None
    except Exception as exc:  # a torchvision built for another torch fails on import in other ways
        raise ConfigError(f"torchvision is installed but does not import: {exc}".splitlines()[0], key="model.torchvision") from None
    if name not in models.list_models():
        raise ConfigError(f"torchvision has no model {name!r}", key="model.torchvision")
    fixed = {"num_classes": num_classes} if num_classes > 0 else {}
    return call_user(
        models.get_model,
        what=f"torchvision model {name!r}",
        key="model.torchvision",
        options=options,
        options_key="model.options",
        name=name,
        weights=None,
        **fixed,
    )


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
