"""A small name -> object registry shared by criteria, metrics, models and data sets."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from autoprune.errors import ConfigError, did_you_mean

T = TypeVar("T")

__all__ = ["Registry", "import_object"]


class Registry(Generic[T]):
    """Names to objects. With ``entry_point_group``, installed packages' entry points of that group are
    loaded the first time a name is missing or the names are listed; ``check(name, obj)`` raises on an
    entry point that loads the wrong kind of object."""

    def __init__(
        self, kind: str, *, entry_point_group: str | None = None, check: Callable[[str, T], None] | None = None
    ) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self.entry_point_group = entry_point_group
        self._check = check
        self._entry_points_loaded = entry_point_group is None
        self._broken: dict[str, str] = {}  # entry-point name -> why it failed to load

    def load_entry_points(self, *, reload: bool = False) -> None:
        """Load the entry points of ``entry_point_group`` (once, unless ``reload``); a registered name wins."""
        if self.entry_point_group is None or (self._entry_points_loaded and not reload):
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.entry_point_group):
            if ep.name in self._items:
                continue
            try:
                obj = ep.load()
                if self._check is not None:
                    self._check(ep.name, obj)
            except Exception as exc:  # a broken plugin must not break autoprune; asking for it says why
                self._broken[ep.name] = f"entry point {ep.name} = {ep.value!r} failed to load: {type(exc).__name__}: {exc}"
                continue
            self._items.setdefault(ep.name, obj)  # importing the module may already have registered it

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str, *, key: str | None = None) -> T:
        """The entry named ``name``; an unknown name is a ConfigError (at config ``key``) with a did-you-mean."""
        if name not in self._items:
            self.load_entry_points()
        try:
            return self._items[name]
        except KeyError:
            if name in self._broken:
                raise ConfigError(f"{self.kind} {name!r}: {self._broken[name]}", key=key) from None
            known = ", ".join(sorted(self._items))
            raise ConfigError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._items)}; known: {known}", key=key
            ) from None

    def names(self) -> list[str]:
        self.load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        if name not in self._items:
            self.load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


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
