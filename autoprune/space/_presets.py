from __future__ import annotations

import sys
from pathlib import Path

from pydantic import ValidationError

from autoprune.config import SpaceSpec, load_yaml, validation_error
from autoprune.errors import ConfigError, did_you_mean

__all__ = ["available_presets", "load_space_spec", "preset_dirs"]


def preset_dirs() -> list[Path]:
    """Where presets live: the repo's ``search_spaces/`` (editable install) or the installed data files."""
    here = Path(__file__).resolve()
    return [here.parents[2] / "search_spaces", Path(sys.prefix) / "share" / "autoprune" / "search_spaces"]


def available_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in reversed(preset_dirs()):
        if folder.is_dir():
            found.update({p.stem: p for p in sorted(folder.glob("*.yaml"))})
    return found


def load_space_spec(value: str | SpaceSpec, *, key: str = "prune.search_space") -> SpaceSpec:
    """A preset name (``per_layer``), a path to a preset YAML file, or an inline spec."""
    if isinstance(value, SpaceSpec):
        return value
    if value.endswith((".yaml", ".yml")):
        path = Path(value)
    else:
        presets = available_presets()
        if value not in presets:
            raise ConfigError(
                f"unknown search-space preset {value!r}{did_you_mean(value, presets)}; known: {', '.join(sorted(presets))}",
                key=key,
            )
        path = presets[value]
    data = load_yaml(path, what="search-space preset")
    try:
        return SpaceSpec.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc, SpaceSpec, source=str(path)) from None
