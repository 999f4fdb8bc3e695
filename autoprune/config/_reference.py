"""The config's reference, generated from the schema: the JSON Schema (``autoprune schema``, for YAML editors) and
the Markdown table of every key (``docs/config.md``). The descriptions are the fields' own, so neither can drift."""

from __future__ import annotations

import json
import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel

from autoprune.config._schema import Config

__all__ = ["JSON_SCHEMA_DIALECT", "REGENERATE", "config_json_schema", "config_reference_markdown"]

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = "python -m autoprune schema --markdown > docs/config.md"


def config_json_schema() -> dict[str, Any]:
    """The JSON Schema of a config file (draft 2020-12): every key with its type, default and description."""
    schema = Config.model_json_schema()
    return {"$schema": JSON_SCHEMA_DIALECT, **schema, "title": "autoprune config"}


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The config sections an annotation holds (``SpaceSpec`` in ``str | SpaceSpec``, an entry of a list)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models(arg)]


def _type_name(annotation: Any) -> str:
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        return " \\| ".join(_type_name(a) for a in args)
    if annotation is type(None):
        return "null"
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "(section)"
    text = json.dumps(value, default=str)
    return f"`{text}`".replace("|", "\\|")


def _sections(model: type[BaseModel], path: str, out: list[tuple[str, type[BaseModel]]]) -> None:
    out.append((path, model))
    for name, field in model.model_fields.items():
        for child in _models(field.annotation):
            is_list = get_origin(field.annotation) is list or any(get_origin(a) is list for a in get_args(field.annotation))
            _sections(child, f"{path}.{name}[]" if is_list else f"{path}.{name}" if path else name, out)


def config_reference_markdown() -> str:
    """``docs/config.md``: one table per section, every key with its type, default and description."""
    sections: list[tuple[str, type[BaseModel]]] = []
    _sections(Config, "", sections)
    lines = [
        "# Config reference",
        "",
        f"<!-- Generated from the schema (the fields' descriptions in autoprune/config/); do not edit. Regenerate: {REGENERATE} -->",
        "",
        "Every key of a config file, section by section, generated from the typed config itself: regenerate it with",
        f"`{REGENERATE}` after changing a field (tests/test_config_reference.py fails while it is stale).",
        "`autoprune schema` prints the same as a JSON Schema for editors that complete and check YAML.",
        "Unknown keys are errors; a bad value is one line naming the key.",
    ]
    for path, model in sections:
        doc = " ".join((model.__doc__ or "").split()) if model.__doc__ and model is not Config else ""
        lines += ["", f"## `{path}`" if path else "## top level", ""]
        if doc:
            lines += [doc, ""]
        lines += ["| key | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            description = " ".join((field.description or "").split()).replace("|", "\\|")
            lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    return "\n".join(lines) + "\n"
