"""The base model: built from the config, then given its weights (a weights file, a pickled module, or the
factory's own with ``model.pretrained``), loaded from the run folder's cache, or trained once (under a file lock,
so concurrent workers train it once) and cached."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from filelock import FileLock
from torch import nn

from autoprune._registry import one_line
from autoprune.config import Config
from autoprune.data import DataBundle
from autoprune.errors import AutopruneError, ConfigError
from autoprune.evaluate import CPU, Runtime, resolve_loss, train
from autoprune.models import load_model, load_weights
from autoprune.study._io import write_run_file

__all__ = ["Log", "base_key", "base_source", "build_base_model", "trained_base", "weights_sha256"]

Log = Callable[[str], None]


def base_key(config: Config) -> str:
    """What the cached base weights depend on; any change retrains."""
    model = config.model.model_dump(mode="json")
    # Caches written before these keys existed stay valid while they keep their defaults.
    for key in ("options", "example_inputs", "pretrained"):
        if not model.get(key):
            model.pop(key, None)
    base_training = config.base_training.model_dump(mode="json")
    if base_training.get("optimizer") == "sgd":  # the default, and the only choice before the key existed
        base_training.pop("optimizer")
    relevant = {
        "model": model,
        "data": config.data.model_dump(mode="json"),
        "base_training": base_training,
        "seed": config.study.seed,
    }
    finetune = config.finetune
    if finetune.loss != "cross_entropy" or finetune.loss_options:
        relevant["loss"] = {"loss": finetune.loss, "loss_options": finetune.loss_options}  # the base trains with it
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def weights_sha256(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def base_source(config: Config) -> str:
    """Where the base model's weights come from, in a few words (``validate`` prints it)."""
    m = config.model
    if m.weights is not None:
        return f"the weights file {str(m.weights)!r}"
    if m.file is not None:
        return f"the pickled module {str(m.file)!r}"
    if m.pretrained:
        return "pretrained (the factory's own weights; model.pretrained: true)"
    cache = config.output / "base.pt"
    return f"trained here ({config.base_training.epochs} epochs of base_training), cached in {str(cache)!r}"


def build_base_model(
    config: Config, data: DataBundle, in_channels: int, search_paths: Iterable[str | Path] = ()
) -> nn.Module:
    """The base architecture, with the configured weights if any; writes nothing. ``in_channels`` is for the
    built-in models (a factory takes ``model.options`` alone)."""
    num_classes = config.model.num_classes or data.num_classes
    if num_classes is None and config.model.builtin is not None:
        raise ConfigError("the data set does not say its number of classes; set model.num_classes", key="model")
    torch.manual_seed(config.study.seed)  # the base model's initial weights follow the study seed
    model = load_model(
        builtin=config.model.builtin,
        factory=config.model.factory,
        in_channels=in_channels,
        num_classes=int(num_classes or 0),
        weights=config.model.weights,
        file=config.model.file,
        trust_pickle=config.model.trust_pickle,
        torchvision=config.model.torchvision,
        options=config.model.options,
        search_paths=search_paths,
    )
    return model.eval()


def _train(config: Config, model: nn.Module, data: DataBundle, runtime: Runtime, search_paths: list[Path]) -> None:
    # The task's loss (finetune.loss): a "pkg:fn" loss is what reads batches the built-in ones cannot (dicts).
    loss = resolve_loss(config.finetune.loss, config.finetune.loss_options, search_paths=search_paths)
    try:
        train(
            model,
            data.train,
            epochs=config.base_training.epochs,
            lr=config.base_training.lr,
            momentum=config.base_training.momentum,
            weight_decay=config.base_training.weight_decay,
            optimizer=config.base_training.optimizer,
            seed=config.study.seed,
            loss=loss,
            runtime=runtime,
        )
    except AutopruneError:
        raise
    except Exception as exc:  # a NaN loss, targets that do not fit the model's output, the user's forward
        raise ConfigError(f"training the base model failed: {one_line(exc)}", key="base_training") from None


def trained_base(
    config: Config,
    model: nn.Module,
    data: DataBundle,
    log: Log,
    check: Callable[[nn.Module], None],
    *,
    runtime: Runtime = CPU,
    search_paths: Iterable[str | Path] = (),
) -> nn.Module:
    """The configured weights (a weights file, a whole pickled model, or the factory's own with
    ``model.pretrained``), else the cached base weights, else train once (on ``runtime``'s device, where ``model``
    already is) and cache.

    ``check`` sees the base model before it is cached, so a base model it refuses is never written.
    """
    if config.model.weights is not None or config.model.file is not None or config.model.pretrained:
        log(f"base model: {base_source(config)}")
        check(model)
        return model
    cache, meta = config.output / "base.pt", config.output / "base.json"
    key = base_key(config)
    # One trainer at a time: a second worker waits, then finds the cache.
    with FileLock(str(config.output / ".base.lock")):
        if cache.is_file() and meta.is_file() and json.loads(meta.read_text()).get("key") == key:
            load_weights(model, cache, key="base model cache")
            log(f"loaded cached base weights from {cache}")
            model.eval()
            check(model)
            return model
        log(f"training the base model for {config.base_training.epochs} epochs")
        _train(config, model, data, runtime, [Path(p) for p in search_paths])
        model.eval()
        check(model)
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        write_run_file(cache, buffer.getvalue())
        write_run_file(meta, json.dumps({"key": key}).encode())
    return model
