"""A small name -> object registry shared by criteria, metrics, models and data sets."""

from __future__ import annotations

import importlib
import inspect
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Generic, TypeVar, cast

from autoprune.errors import AutopruneError, ConfigError, did_you_mean

T = TypeVar("T")

__all__ = ["Registry", "call_user", "import_callable", "import_object", "import_path", "one_line"]


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


@contextmanager
def import_path(paths: Iterable[str | Path]) -> Iterator[None]:
    """Put ``paths`` first on ``sys.path`` for the duration, as ``python -m`` puts the working directory."""
    added: list[str] = []
    for path in paths:
        entry = str(path)
        if entry not in sys.path and entry not in added:
            added.append(entry)
    sys.path[:0] = added
    importlib.invalidate_caches()  # a module written since the last import is found
    try:
        yield
    finally:
        for entry in added:
            if entry in sys.path:
                sys.path.remove(entry)


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, short enough for an error line."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message[:300]}" if message else type(exc).__name__


def import_object(spec: str, *, key: str | None = None, search_paths: Iterable[str | Path] = ()) -> object:
    """Import ``"pkg.module:attr"``, looking in ``search_paths`` (the config's folder, the working directory)
    before ``sys.path``; a bad spec is a ConfigError naming it (and the config ``key``)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"expected 'pkg.module:function', found {spec!r}", key=key)
    paths = [str(p) for p in search_paths]
    try:
        with import_path(paths):
            module = importlib.import_module(module_name)
    except Exception as exc:  # an import can fail in any way inside user code
        where = f" (looked in {', '.join(dict.fromkeys(paths))} and sys.path)" if isinstance(exc, ModuleNotFoundError) and paths else ""
        raise ConfigError(f"cannot import module {module_name!r} of {spec!r}: {one_line(exc)}{where}", key=key) from None
    try:
        return getattr(module, attr)
    except AttributeError:
        raise ConfigError(f"module {module_name!r} has no attribute {attr!r}", key=key) from None


def import_callable(
    spec: str, *, key: str, expected: str, search_paths: Iterable[str | Path] = ()
) -> Callable[..., Any]:
    """``import_object`` for what must be called (a factory, a metric, a loss); anything else is a ConfigError
    at ``key`` saying what was ``expected``."""
    obj = import_object(spec, key=key, search_paths=search_paths)
    if not callable(obj):
        raise ConfigError(f"{spec!r} is {type(obj).__name__}, not callable; expected {expected}", key=key)
    return cast(Callable[..., Any], obj)


def call_user(
    fn: Callable[..., Any], *, what: str, key: str, options: Mapping[str, Any], options_key: str, **fixed: Any
) -> Any:
    """``fn(**fixed, **options)`` for a user's (or a registered) builder. Options it does not take are a
    ConfigError at ``options_key``; anything it raises is a ConfigError at ``key`` naming ``what`` and the cause."""
    clash = sorted(set(fixed) & set(options))
    if clash:
        raise ConfigError(f"{', '.join(clash)} are set by autoprune, not by options", key=options_key)
    kwargs = {**fixed, **options}
    try:
        signature: inspect.Signature | None = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables have none
        signature = None
    if signature is not None:
        try:
            signature.bind(**kwargs)
        except TypeError as exc:
            kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            takes = [n for n, p in signature.parameters.items() if p.kind in kinds and n not in fixed]
            raise ConfigError(
                f"{what} does not fit these options ({exc}); it takes: {', '.join(takes) or 'no options'}", key=options_key
            ) from None
    try:
        return fn(**kwargs)
    except AutopruneError:
        raise
    except Exception as exc:  # user code fails in any way; the line names whose code and why
        raise ConfigError(f"{what} raised {one_line(exc)}", key=key) from None
