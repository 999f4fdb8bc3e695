"""Data sets: a :class:`DataBundle` of train / val / test loaders. The built-in ``digits`` needs no download."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from autoprune._registry import Registry, call_user, import_callable
from autoprune.data._bundle import DataBundle
from autoprune.data._digits import digits
from autoprune.data._digits_jitter import digits_jitter
from autoprune.data._digits_seg import digits_seg
from autoprune.errors import ConfigError

__all__ = ["DATASETS", "DataBundle", "digits", "digits_jitter", "digits_seg", "load_data", "register_dataset"]

DataBuilder = Callable[..., DataBundle]
DATASETS: Registry[DataBuilder] = Registry("built-in data set")
DATASETS.register("digits")(digits)
DATASETS.register("digits_seg")(digits_seg)
DATASETS.register("digits_jitter")(digits_jitter)  # harder: affine-jittered noisy copies


def register_dataset(name: str) -> Callable[[DataBuilder], DataBuilder]:
    return DATASETS.register(name)


def load_data(
    *,
    builtin: str | None,
    factory: str | None,
    batch_size: int,
    val_fraction: float,
    seed: int,
    options: dict[str, Any],
    search_paths: Iterable[str | Path] = (),
) -> DataBundle:
    """Build the built-in data set, or call a user factory ``fn(**options)`` (imported from ``search_paths`` first).

    A factory returns a DataBundle, or ``(train, val)`` / ``(train, val, test)`` DataLoaders. A factory that
    raises, returns something else, or returns a training or validation loader without a batch is a ConfigError.
    """
    if builtin is not None:
        bundle = call_user(
            DATASETS.get(builtin, key="data.builtin"),
            what=f"built-in data set {builtin!r}",
            key="data.builtin",
            options=options,
            options_key="data.options",
            batch_size=batch_size,
            val_fraction=val_fraction,
            seed=seed,
        )
        return _checked(bundle, f"built-in data set {builtin!r}", "data.builtin")
    if factory is None:
        raise ConfigError("set one of data.builtin or data.factory", key="data")
    fn = import_callable(factory, key="data.factory", expected="a data factory", search_paths=search_paths)
    what = f"data factory {factory!r}"
    result = call_user(fn, what=what, key="data.factory", options=options, options_key="data.options")
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        result = DataBundle(train=result[0], val=result[1], test=result[2] if len(result) == 3 else None)
    if not isinstance(result, DataBundle):
        raise ConfigError(
            f"{what} returned {type(result).__name__}; expected a DataBundle or (train, val[, test])", key="data.factory"
        )
    return _checked(result, what, "data.factory")


def _checked(bundle: DataBundle, what: str, key: str) -> DataBundle:
    """Every loader iterable, and the training and validation loaders not empty (the test split is optional)."""
    loaders = {"training": bundle.train, "validation": bundle.val, "test": bundle.test}
    for split, loader in loaders.items():
        if loader is None and split == "test":
            continue
        if not isinstance(loader, Iterable):
            raise ConfigError(f"{what} gave a {split} loader of type {type(loader).__name__}; expected an iterable of batches", key=key)
        if split != "test" and _is_empty(loader):
            raise ConfigError(f"{what} gave an empty {split} loader (no batch); check the data and the batch size", key=key)
    return bundle


def _is_empty(loader: Iterable[Any]) -> bool:
    try:
        return len(loader) == 0  # type: ignore[arg-type]
    except TypeError:  # an iterable without a length: look at its first batch (training reseeds every pass)
        return next(iter(loader), _NO_BATCH) is _NO_BATCH


_NO_BATCH = object()
