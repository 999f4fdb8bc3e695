from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from autoprune.config._schema import Config
from autoprune.errors import ConfigError, did_you_mean

__all__ = ["apply_overrides", "config_from_dict", "dump_config", "load_config", "load_yaml", "validation_error"]


def load_yaml(path: str | Path, *, what: str = "config") -> dict[str, Any]:
    """Read a YAML mapping with the safe loader; a missing, unreadable or malformed file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", source=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} file: {exc.strerror}", source=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML{where}: {problem}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, found {type(data).__name__}", source=str(path))
    return data


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
    return config_from_dict(data, source=str(path))


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
    loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p in ("str", "SpaceSpec")))
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
