"""Data sets: a :class:`DataBundle` of train / val / test loaders. The built-in ``digits`` needs no download."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from autoprune._registry import Registry, import_object
from autoprune.data._bundle import DataBundle
from autoprune.data._digits import digits
from autoprune.data._digits_seg import digits_seg
from autoprune.errors import ConfigError

__all__ = ["DATASETS", "DataBundle", "digits", "digits_seg", "load_data", "register_dataset"]

DataBuilder = Callable[..., DataBundle]
DATASETS: Registry[DataBuilder] = Registry("built-in data set")
DATASETS.register("digits")(digits)
DATASETS.register("digits_seg")(digits_seg)


def register_dataset(name: str) -> Callable[[DataBuilder], DataBuilder]:
    return DATASETS.register(name)


def load_data(
    *, builtin: str | None, factory: str | None, batch_size: int, val_fraction: float, seed: int, options: dict[str, Any]
) -> DataBundle:
    """Build the built-in data set, or call a user factory ``fn(**options)``.

    A factory returns a DataBundle, or ``(train, val)`` / ``(train, val, test)`` DataLoaders.
    """
    if builtin is not None:
        return DATASETS.get(builtin, key="data.builtin")(batch_size=batch_size, val_fraction=val_fraction, seed=seed, **options)
    if factory is None:
        raise ConfigError("set one of data.builtin or data.factory", key="data")
    fn = import_object(factory, key="data.factory")
    if not callable(fn):
        raise ConfigError(f"data factory {factory!r} is not callable", key="data.factory")
    result = fn(**options)
    if isinstance(result, DataBundle):
        return result
    if isinstance(result, (tuple, list)) and len(result) in (2, 3):
        return DataBundle(train=result[0], val=result[1], test=result[2] if len(result) == 3 else None)
    raise ConfigError(
        f"data factory {factory!r} returned {type(result).__name__}; expected a DataBundle or (train, val[, test])",
        key="data.factory",
    )
