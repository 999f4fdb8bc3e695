"""A small name -> object registry shared by criteria, metrics, models and data sets."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autoprune.errors import ConfigError, did_you_mean

T = TypeVar("T")

__all__ = ["Registry", "import_object"]


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, *, key: str | None = None) -> T:
        """The entry named ``name``; an unknown name is a ConfigError (at config ``key``) with a did-you-mean."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; known: {known}", key=key
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))


def import_object(spec: str, *, key: str | None = None) -> object:
    """Import ``"pkg.module:attr"``; a bad spec is a ConfigError naming it (and the config ``key``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'pkg.module:function', found {spec!r}", key=key)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way inside user code
        raise ConfigError(f"cannot import module {module_name!r} of {spec!r}: {exc}", key=key) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}", key=key) from None
