"""Registered costs end to end: a cost a user registers (or names as "pkg.module:fn") is the second objective,
named by its label in the study (what the dashboard shows), the front table and the report."""

from __future__ import annotations

import importlib
import sys
import uuid
from pathlib import Path

import pytest
from conftest import tiny_config, write_config
from torch import nn

import autoprune
from autoprune.config import config_from_dict, load_config
from autoprune.errors import ConfigError
from autoprune.evaluate import Candidate, get_cost
from autoprune.report import collect, write_report
from autoprune.study import check_registered_names, metric_names

USER_COSTS = '''
from autoprune.evaluate import Cost, register_cost

NAME = "{name}"


@register_cost(NAME, label="params squared")
def params_squared(candidate):
    """A made-up cost that is not any built-in one: the relative parameter count, squared."""
    ratio = candidate.report.params_ratio
    return Cost(ratio ** 2, float(candidate.report.params_after) ** 2, "params^2")


def not_a_cost(candidate):
    return 0.5
'''


BESIDE = '''
from autoprune.evaluate import Cost


def conv_channels(candidate):
    kept = sum(after for _, after in candidate.report.channels.values())
    base = sum(before for before, _ in candidate.report.channels.values())
    return Cost(kept / base, float(kept), "channels")


conv_channels.label = "kept channels"
'''


@pytest.fixture(scope="module")
def user_costs(tmp_path_factory):
    """A user's module, written to a folder of its own and imported as a user's script would import it."""
    folder = tmp_path_factory.mktemp("user_costs")
    module = f"user_costs_{uuid.uuid4().hex[:8]}"
    (folder / f"{module}.py").write_text(USER_COSTS.format(name=f"params_squared_{module}"))
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(module), folder
    finally:
        sys.path.remove(str(folder))


def _raw(tmp_path, base_weights, cost):
    return tiny_config(
        tmp_path / "run",
        base_weights,
        model={"input_shape": [1, 8, 8]},
        data={"options": {"size": 8}},
        prune={"search_space": "uniform", "criteria": ["l1"]},
        finetune={"epochs": 0, "bn_recalibration_batches": 2},
        study={"n_trials": 3},
        objectives=["metric", cost],
    )


def test_a_cost_registered_in_a_user_module_is_the_second_objective_with_its_label(tmp_path, base_weights, user_costs):
    module, _ = user_costs
    config = config_from_dict(_raw(tmp_path, base_weights, module.NAME))
    check_registered_names(config)  # the registry knows it once the user's module is imported
    study = autoprune.search(config)

    assert study.metric_names == ["accuracy", "params squared (relative)"]  # what the dashboard shows
    trials = [t for t in study.trials if t.values is not None]
    assert len(trials) == 3
    for trial in trials:
        assert trial.values[1] == pytest.approx(trial.user_attrs["params_relative"] ** 2)
        assert trial.values[1] < trial.user_attrs["params_relative"] < 1.0
    data = collect(study)
    assert data.cost_name == "params squared (relative)"
    report = (write_report(study, tmp_path / "report") and (tmp_path / "report" / "report.md").read_text())
    assert "params squared" in report
    assert metric_names(config) == ["accuracy", "params squared (relative)"]  # the front table's header


def test_a_user_cost_named_pkg_module_fn_is_imported_beside_the_config(tmp_path, base_weights):
    (tmp_path / "beside.py").write_text(BESIDE)
    raw = _raw(tmp_path, base_weights, "beside:conv_channels")
    config = load_config(write_config(tmp_path / "config.yaml", raw))
    study = autoprune.search(config)
    assert study.metric_names == ["accuracy", "kept channels (relative)"]
    trials = [t for t in study.trials if t.values is not None]
    assert len(trials) == 3
    for trial in trials:
        kept = sum(trial.user_attrs["channels"].values())
        assert 0 < trial.values[1] < 1 and kept > 0


def test_an_unknown_cost_is_one_line_naming_the_key():
    config = config_from_dict(tiny_config(Path("unused"), objectives=["metric", "macz"]))
    with pytest.raises(ConfigError) as info:
        check_registered_names(config)
    assert info.value.key == "objectives[1]" and "did you mean 'macs'" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="objectives"):
        config_from_dict(tiny_config(Path("unused"), objectives=["metric", ":fn"]))


def test_a_user_cost_that_returns_no_cost_is_one_line_naming_it(user_costs):
    module, folder = user_costs
    cost = get_cost(f"{module.__name__}:not_a_cost", search_paths=[folder])
    with pytest.raises(ConfigError) as info:
        cost(Candidate(nn.Linear(2, 2), report=None))  # type: ignore[arg-type]
    assert info.value.key == "objectives[1]" and "not_a_cost' returned 0.5; expected" in str(info.value)
