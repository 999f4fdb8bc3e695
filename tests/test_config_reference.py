"""The config reference cannot drift: every key carries a description, docs/config.md is generated from the
schema (and this test fails while it is stale), and ``autoprune schema`` prints the JSON Schema editors use."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from autoprune.cli import main
from autoprune.config import Config, config_json_schema, config_reference_markdown
from autoprune.config._reference import REGENERATE

DOC = Path(__file__).resolve().parent.parent / "docs" / "config.md"


def _keys(model: type[BaseModel], path: str = "") -> dict[str, object]:
    """Every key path reachable from ``model`` -> its field."""
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        key = f"{path}.{name}" if path else name
        found[key] = field
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        candidates += [inner for c in candidates for inner in getattr(c, "__args__", ())]
        for child in candidates:
            if isinstance(child, type) and issubclass(child, BaseModel):
                found.update(_keys(child, key))
    return found


def test_every_config_key_has_a_description():
    keys = _keys(Config)
    assert len(keys) > 120  # the walk reaches the nested sections (model, prune.search_space, study.stages, ...)
    missing = sorted(key for key, field in keys.items() if not getattr(field, "description", None))
    assert not missing, f"config keys without Field(description=...): {missing}"


def test_docs_config_md_is_generated_from_the_schema():
    expected = config_reference_markdown()
    assert DOC.read_text() == expected, f"docs/config.md is stale; regenerate it: {REGENERATE}"
    for key in ("n_trials", "objectives", "search_space", "warm_start_ratios", "heartbeat_interval"):
        assert f"| `{key}` |" in expected


def test_autoprune_schema_prints_the_json_schema_with_every_description(capsys):
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == json.loads(json.dumps(config_json_schema()))
    assert schema["$schema"].startswith("https://json-schema.org/") and schema["additionalProperties"] is False
    assert {"name", "output", "model"} <= set(schema["required"])
    study = schema["$defs"]["StudyConfig"]["properties"]
    assert study["n_trials"]["default"] == 40 and "the trials the study holds" in study["n_trials"]["description"]


def test_autoprune_schema_markdown_is_the_reference(capsys):
    assert main(["schema", "--markdown"]) == 0
    assert capsys.readouterr().out == config_reference_markdown()
