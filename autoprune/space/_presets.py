from __future__ import annotations

import sys
from importlib.resources import as_file, files
from importlib.resources.abc import Traversable
from pathlib import Path

from pydantic import ValidationError

from autoprune.config import SpaceSpec, load_yaml, validation_error
from autoprune.errors import ConfigError, did_you_mean

__all__ = ["available_presets", "load_space_spec", "preset_dirs"]


def _source_presets() -> Path | None:
    """``search_spaces/`` beside the package in a source checkout (or an editable install): the presets' one
    source. A wheel has none there; the build maps the folder into the package instead."""
    root = Path(__file__).resolve().parents[2]
    folder = root / "search_spaces"
    return folder if (root / "pyproject.toml").is_file() and folder.is_dir() else None


def preset_dirs() -> list[Traversable]:
    """Where presets live, first wins: the checkout's ``search_spaces/`` when running from source, else the
    package's ``autoprune/search_spaces`` (where the wheel build puts them; read through ``importlib.resources``),
    then ``<prefix>/share/autoprune/search_spaces``."""
    source = _source_presets()
    packaged: Traversable = source if source is not None else files("autoprune") / "search_spaces"
    return [packaged, Path(sys.prefix) / "share" / "autoprune" / "search_spaces"]


def available_presets() -> dict[str, Traversable]:
    found: dict[str, Traversable] = {}
    for folder in reversed(preset_dirs()):
        if folder.is_dir():
            yamls = sorted((p for p in folder.iterdir() if p.name.endswith(".yaml")), key=lambda p: p.name)
            found.update({p.name.removesuffix(".yaml"): p for p in yamls})
    return found


def load_space_spec(value: str | SpaceSpec, *, key: str = "prune.search_space") -> SpaceSpec:
    """A preset name (``per_layer``), a path to a preset YAML file, or an inline spec."""
    if isinstance(value, SpaceSpec):
        return value
    if value.endswith((".yaml", ".yml")):
        path = Path(value)
        data = load_yaml(path, what="search-space preset")
    else:
        presets = available_presets()
        if not presets:  # a broken install, not a bad config: say where we looked
            looked = ", ".join(str(folder) for folder in preset_dirs())
            raise ConfigError(f"no search-space presets are installed (looked in {looked})", key=key)
        if value not in presets:
            known = ", ".join(sorted(presets))
            raise ConfigError(
                f"unknown search-space preset {value!r}{did_you_mean(value, presets)}; known: {known}", key=key
            )
        with as_file(presets[value]) as path:  # a real file even when the package is zipped
            data = load_yaml(path, what="search-space preset")
    try:
        return SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, SpaceSpec, source=str(path)) from None
