from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from autoprune.cli import main
from autoprune.config import Config, dump_config, load_config
from autoprune.config._load import check_expanded_size
from autoprune.errors import ConfigError
from conftest import tiny_config, write_config


def _load(tmp_path: Path, **sections) -> Config:
    return load_config(write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out", **sections)))


def _error(tmp_path: Path, **sections) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, **sections)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_example_config_loads_with_the_documented_defaults():
    config = load_config(Path(__file__).resolve().parents[1] / "experiments/digits/config.yaml")
    assert config.model.builtin == "resnet_small"
    assert config.prune.criteria == ["l1", "l2", "fpgm"]
    assert config.objectives == ("metric", "macs")
    assert config.storage_url.startswith("sqlite:///") and config.storage_url.endswith("study.db")


def test_unknown_key_is_an_error_naming_the_key_path_with_a_suggestion(tmp_path):
    message = _error(tmp_path, prune={"ratoi": [0.1, 0.2]})
    assert "prune.ratoi" in message and "did you mean 'ratio'" in message


def test_wrong_type_names_the_key_and_what_was_found(tmp_path):
    message = _error(tmp_path, data={"batch_size": "big"})
    assert "data.batch_size" in message and "'big'" in message


@pytest.mark.parametrize("ratio, key", [([0.0, 1.5], "prune.ratio[1]"), ([-0.1, 0.5], "prune.ratio[0]")])
def test_ratio_bounds_outside_the_unit_interval_are_refused(tmp_path, ratio, key):
    assert key in _error(tmp_path, prune={"ratio": ratio})


def test_reversed_ratio_bounds_are_refused(tmp_path):
    assert "reversed" in _error(tmp_path, prune={"ratio": [0.8, 0.2]})


def test_empty_criteria_list_is_refused(tmp_path):
    assert "prune.criteria" in _error(tmp_path, prune={"criteria": []})


def test_unknown_criterion_lists_the_known_ones_with_did_you_mean(tmp_path):
    message = _error(tmp_path, prune={"criteria": ["l1", "fpmg"]})
    assert "prune.criteria[1]" in message and "did you mean 'fpgm'" in message and "l2" in message


def test_unknown_sampler_is_refused_with_did_you_mean(tmp_path):
    message = _error(tmp_path, study={"sampler": "tpee"})
    assert "study.sampler" in message and "did you mean 'tpe'" in message


def test_zero_trials_is_refused(tmp_path):
    assert "study.n_trials" in _error(tmp_path, study={"n_trials": 0})


def test_model_needs_exactly_one_source(tmp_path):
    assert "model" in _error(tmp_path, model={"builtin": "resnet_small", "factory": "x:y"})


def test_overrides_are_applied_before_validation(tmp_path):
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path / "out"))
    config = load_config(path, {"study.n_trials": 7, "output": str(tmp_path / "elsewhere"), "study.storage": None})
    assert config.study.n_trials == 7 and config.output == tmp_path / "elsewhere"
    with pytest.raises(ConfigError, match="study.n_trials"):
        load_config(path, {"study.n_trials": -1})


def test_resolved_config_round_trips(tmp_path):
    config = _load(tmp_path)
    again = Config.model_validate(yaml.safe_load(dump_config(config)))
    assert again == config


def test_malformed_yaml_is_one_line_naming_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def _billion_laughs(levels: int = 9) -> str:
    """Nine nested aliases, each repeating the previous nine times: about 9**9 values once expanded."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


def test_a_billion_laughs_config_is_refused_without_expanding_it(tmp_path):
    path = tmp_path / "laughs.yaml"
    path.write_text(_billion_laughs())
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "expands to more than" in message and "\n" not in message


def test_a_recursive_alias_is_refused_in_one_line(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("name: tiny\nloop: &a [*a]\n")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_config(path)


def test_yaml_nested_past_the_parsers_depth_is_one_config_error(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text("name: " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)


def test_modest_aliases_still_load_and_expand(tmp_path):
    text = yaml.safe_dump(tiny_config(tmp_path / "out"), sort_keys=False)
    # One anchored epoch count reused: what a user writes to keep two sections in step.
    text = text.replace("  epochs: 1\n  lr: 0.05", "  epochs: &epochs 3\n  lr: 0.05", 1)
    text = text.replace("  epochs: 1\n  lr: 0.01", "  epochs: *epochs\n  lr: 0.01", 1)
    path = tmp_path / "aliases.yaml"
    path.write_text(text)
    assert "*epochs" in text
    config = load_config(path)
    assert config.finetune.epochs == config.base_training.epochs == 3


def test_expanded_size_counts_each_alias_use():
    shared = ["a", "b", "c"]  # a list of 3 values: 4 nodes
    assert check_expanded_size({"x": shared, "y": shared}) == 1 + 2 + 2 * 4
    with pytest.raises(ConfigError, match="more than 10 values"):
        check_expanded_size({"x": shared, "y": shared, "z": shared}, limit=10)


def test_config_that_is_not_utf8_is_one_cli_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(tiny_config(tmp_path / "out")).encode() + "name: caf\u00e9\n".encode("latin-1"))
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(path) in err and "not valid UTF-8 text at byte" in err
