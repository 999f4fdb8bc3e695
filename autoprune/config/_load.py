from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from autoprune.config._schema import Config
from autoprune.errors import ConfigError, did_you_mean

__all__ = [
    "MAX_CONFIG_VALUES",
    "apply_overrides",
    "check_expanded_size",
    "config_from_dict",
    "dump_config",
    "load_config",
    "load_yaml",
    "validation_error",
]


def load_yaml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", source=str(path)) from None
    except IsADirectoryError:
        raise ConfigError(f"{what} path is a directory, not a file", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file: {exc.strerror}", source=str(path)) from None
    try:
        text = raw.decode("utf-8")  # YAML is UTF-8 whatever the locale says
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not valid UTF-8 text at byte {exc.start}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    except RecursionError:  # PyYAML's parser recurses once per nesting level
        raise ConfigError("invalid YAML: nested too deeply", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, found {type(data).__name__}", source=str(path))
    check_expanded_size(data, source=str(path))
    return data


# Far above any real config (a few hundred values), far below what hangs validation.
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 64


def check_expanded_size(data: Any, *, limit: int = MAX_CONFIG_VALUES, source: str | None = None) -> int:
    """The number of values ``data`` holds once every YAML alias is expanded; a ConfigError over ``limit``.

    YAML aliases share one object, so a few lines can stand for billions of values ("billion laughs") that
    copying or validating would expand. The count is memoised per shared container, so it takes time linear in
    the distinct objects, not in the expansion. A container that holds itself (``a: &a [*a]``) is refused too.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: Any, depth: int) -> int:
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is not None:
            return known
        if id(node) in open_:
            raise ConfigError("config refers to itself (a recursive YAML alias)", source=source)
        if depth > MAX_CONFIG_DEPTH:
            raise ConfigError(f"config is nested more than {MAX_CONFIG_DEPTH} levels deep", source=source)
        open_.add(id(node))
        children = [*node.keys(), *node.values()] if isinstance(node, dict) else node
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > limit:
                raise ConfigError(
                    f"config expands to more than {limit} values (YAML aliases nested too deep?)", source=source
                )
        open_.discard(id(node))
        sizes[id(node)] = total
        return total

    return size(data, 0)


def apply_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``study.n_trials``) on a copy of the raw mapping; ``None`` values are skipped."""
    result: dict[str, Any] = _deep_copy(data)
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = result
        *parents, leaf = dotted.split(".")
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[leaf] = value
    return result


def _deep_copy(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {k: _deep_copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_deep_copy(v) for v in data]
    return data


def config_from_dict(data: Mapping[str, Any], *, source: str | None = None) -> Config:
    try:
        return Config.model_validate(dict(data))
    except ValidationError as exc:
        raise validation_error(exc, Config, source=source) from None


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Config:
    """Load, override and validate a YAML config; any problem is one ConfigError naming the key path."""
    data = apply_overrides(load_yaml(path), overrides or {})
    config = config_from_dict(data, source=str(path))
    config._source = Path(path).resolve()  # factories named "module:fn" are imported from beside the file too
    return config


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def _key_path(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the schema allows at the parent of ``loc``."""
    model: type[BaseModel] | None = root
    for part in loc[:-1]:
        if model is None or isinstance(part, int):
            return []
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return sorted(model.model_fields) if model is not None else []


def validation_error(
    exc: ValidationError, root: type[BaseModel], *, source: str | None = None, prefix: str = ""
) -> ConfigError:
    """One ConfigError for a pydantic error: the key path, what was found and what was expected."""
    errors = exc.errors(include_url=False)
    # A union (str | SpaceSpec) reports one error per branch; the most specific one is the deepest.
    error = max(errors, key=lambda e: len(e["loc"]))
    # Union branches are named by type, or by the validator wrapping it (function-after[..., SpaceSpec]).
    loc = tuple(
        p for p in error["loc"] if not (isinstance(p, str) and (p in ("str", "SpaceSpec") or p.startswith("function-")))
    )
    key = ".".join(p for p in (prefix, _key_path(loc)) if p) or "(top level)"
    if error["type"] == "extra_forbidden":
        allowed = _allowed_keys(root, loc)
        name = str(loc[-1])
        hint = did_you_mean(name, allowed)
        return ConfigError(f"unknown key{hint}; allowed keys here: {', '.join(allowed)}", key=key, source=source)
    if error["type"] == "missing":
        return ConfigError("required key is missing", key=key, source=source)
    message = error["msg"].removeprefix("Value error, ")
    found = error.get("input")
    if error["type"].startswith("value_error") or isinstance(found, (dict, list)):
        return ConfigError(message, key=key, source=source)
    return ConfigError(f"{message}, found {found!r}", key=key, source=source)
