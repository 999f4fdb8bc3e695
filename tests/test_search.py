from __future__ import annotations

import optuna
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_cli, tiny_config, write_config

import autoprune
from autoprune import PruningPlan
from autoprune.config import config_from_dict
from autoprune.space import SearchSpace, load_space_spec
from autoprune.study import pareto_frame

CRITERIA = ["l1", "fpgm"]


def _config(tmp_path, base_weights, **sections):
    sections.setdefault("prune", {"criteria": CRITERIA})
    return tiny_config(tmp_path / "run", base_weights, **sections)


def _load_study(output):
    return optuna.load_study(study_name="tiny", storage=f"sqlite:///{output / 'study.db'}")


def test_cli_search_runs_end_to_end_and_resumes(tmp_path, base_weights):
    path = write_config(tmp_path / "c.yaml", _config(tmp_path, base_weights, study={"n_trials": 8}))
    result = run_cli("search", str(path))
    assert result.returncode == 0, result.stderr
    output = tmp_path / "run"
    for name in ("study.db", "trials.csv", "config.resolved.yaml"):
        assert (output / name).is_file(), name
    assert yaml.safe_load((output / "config.resolved.yaml").read_text())["study"]["n_trials"] == 8

    frame = pd.read_csv(output / "trials.csv")
    assert len(frame) == 8 and set(frame["state"]) == {"COMPLETE"}
    assert {"ratio.conv1", "criterion.layer2.0.conv2", "channels.layer3.1.conv1", "seconds.finetune"} <= set(frame.columns)
    # warm start: 3 uniform ratios x 2 criteria, before anything sampled
    uniform = frame.loc[:5, [c for c in frame.columns if c.startswith("ratio.")]]
    assert sorted(uniform.iloc[:, 0].round(2)) == [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    assert (uniform.nunique(axis=1) == 1).all()

    lines = result.stdout.splitlines()
    rows = [line for line in lines if line.startswith("│")]
    assert rows[0].split("│")[1].strip() == "base"
    front = pareto_frame(_load_study(output))
    assert front.iloc[0]["trial"] == "base" and (front.iloc[1:]["macs_relative"] < 1.0).all()
    assert len(rows) >= len(front)  # the table wraps long plan summaries onto extra lines

    again = run_cli("search", str(path), "--n-trials", "10")
    assert again.returncode == 0, again.stderr
    study = _load_study(output)
    numbers = [t.number for t in study.trials]
    assert numbers == list(range(10))
    assert sum(bool(t.user_attrs.get("warm_start")) for t in study.trials) == 6  # not enqueued twice
    assert "8 trials done, 2 to run" in again.stderr


def study_space_plan(config, trial):
    groups = tuple(trial.user_attrs["plan"]["groups"])
    space = SearchSpace(load_space_spec(config.prune.search_space), groups, config.prune.ratio, tuple(config.prune.criteria))
    return space.plan_from_params(trial.params)


def test_every_trial_records_plan_channels_costs_metrics_and_times(tmp_path, base_weights):
    config = config_from_dict(_config(tmp_path, base_weights, study={"n_trials": 2}))
    study = autoprune.search(config)
    assert study.metric_names == ["accuracy", "MACs (relative)"]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    complete = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(complete) == 2  # the other warm-start trials wait in the queue for a resume
    for trial in complete:
        attrs = trial.user_attrs
        assert PruningPlan.from_dict(attrs["plan"]) == study_space_plan(config, trial)
        assert set(attrs["plan"]["groups"]) == set(attrs["channels"]) == {g["name"] for g in study.user_attrs["groups"]}
        assert attrs["macs_relative"] == pytest.approx(trial.values[1])
        assert attrs["macs"] > 0 and 0 < attrs["params_relative"] < 1
        assert 0.0 <= attrs["metric_before_finetune"] <= 1.0
        assert set(attrs["seconds"]) == {"prune", "count", "recalibrate", "finetune", "evaluate"}
    assert study.user_attrs["base"]["macs"] > study.trials[0].user_attrs["macs"]


def test_infeasible_trials_are_constrained_and_spend_no_fine_tune(tmp_path, base_weights):
    config = config_from_dict(
        _config(tmp_path, base_weights, constraints={"max_macs": 0.3}, study={"n_trials": 6})
    )
    study = autoprune.search(config)
    infeasible = [t for t in study.trials if t.user_attrs["macs_relative"] > 0.3]
    feasible = [t for t in study.trials if t.user_attrs["macs_relative"] <= 0.3]
    assert infeasible and feasible  # uniform 0.25 and 0.5 are out, 0.75 is in
    for t in infeasible:
        assert t.constraints["max_macs"] > 0 and t.user_attrs["feasible"] is False
        assert "finetune" not in t.user_attrs["seconds"]
    for t in feasible:
        assert t.constraints["max_macs"] <= 0 and "finetune" in t.user_attrs["seconds"]
    front_numbers = {t.number for t in study.best_trials}
    assert front_numbers and front_numbers <= {t.number for t in feasible}


def test_base_model_is_trained_once_and_cached(tmp_path):
    config = config_from_dict(tiny_config(tmp_path / "run", None, study={"n_trials": 1}, prune={"criteria": ["l1"]}))
    logs: list[str] = []
    autoprune.search(config, log=logs.append)
    assert (tmp_path / "run" / "base.pt").is_file()
    assert any("training the base model" in line for line in logs)
    logs.clear()
    autoprune.search(config.model_copy(update={"study": config.study.model_copy(update={"n_trials": 2})}), log=logs.append)
    assert any("loaded cached base weights" in line for line in logs)
    assert not any("training the base model" in line for line in logs)


def test_bad_config_on_the_cli_is_one_line_exit_2_and_creates_nothing(tmp_path, base_weights):
    config = _config(tmp_path, base_weights)
    config["prune"]["ratio"] = [0.0, 1.2]
    path = write_config(tmp_path / "c.yaml", config)
    result = run_cli("search", str(path))
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "prune.ratio[1]" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_bad_flag_is_one_line_exit_2(tmp_path, base_weights):
    path = write_config(tmp_path / "c.yaml", _config(tmp_path, base_weights))
    result = run_cli("search", str(path), "--n-trials", "-3")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--n-trials" in result.stderr


def _user_config(tmp_path, **sections):
    """SmallNet on 64 random samples (tests/user_models.py): a whole search takes a second or two."""
    config = {
        "name": "tiny",
        "output": str(tmp_path / "run"),
        "model": {"factory": "user_models:small_net", "input_shape": [1, 16, 16]},
        "data": {"factory": "user_models:tiny_data"},
        "base_training": {"epochs": 1, "lr": 0.01},
        "prune": {"ignore": ["fc"], "search_space": "uniform", "ratio": [0.0, 0.5], "criteria": ["l1"]},
        "finetune": {"epochs": 0, "bn_recalibration_batches": 1},
        "study": {"n_trials": 2, "sampler": "random", "search": "single"},
    }
    for key, value in sections.items():
        config[key] = {**config[key], **value} if isinstance(value, dict) else value
    return config


CHANGES = {
    "model": (
        {"model": {"factory": "user_models:zero_net"}},
        "model.factory",
        "another model: user_models:small_net -> user_models:zero_net",
    ),
    "criteria": ({"prune": {"criteria": ["l1", "fpgm"]}}, "prune.criteria", "another search space: [l1] -> [l1, fpgm]"),
    "objectives": ({"objectives": ["metric", "params"]}, "objectives", "another objectives: [metric, macs] -> [metric, params]"),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_resuming_with_a_changed_config_is_refused_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, change):
    from autoprune.cli import main

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    sections, key, what = CHANGES[change]
    path = write_config(tmp_path / "c.yaml", _user_config(tmp_path))
    assert main(["search", str(path)]) == 0
    capsys.readouterr()
    output = tmp_path / "run"
    record = {name: (output / name).read_bytes() for name in ("config.resolved.yaml", "base.pt", "trials.csv")}
    trials = len(_load_study(output).trials)

    changed = write_config(tmp_path / "c.yaml", _user_config(tmp_path, **sections))
    assert main(["search", str(changed), "--n-trials", "4"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{changed}: {key}: study 'tiny' in {output} was started with {what}" in lines[0]
    assert "--study-name" in lines[0]
    assert {name: (output / name).read_bytes() for name in record} == record  # byte-identical
    assert len(_load_study(output).trials) == trials


def test_study_name_starts_a_new_study_beside_the_old_one(tmp_path, monkeypatch, capsys):
    from autoprune.cli import main

    monkeypatch.syspath_prepend(str(REPO / "tests"))
    path = write_config(tmp_path / "c.yaml", _user_config(tmp_path))
    assert main(["search", str(path)]) == 0
    output = tmp_path / "run"
    first = {name: (output / name).read_bytes() for name in ("config.resolved.yaml", "trials.csv")}
    changed = write_config(tmp_path / "other.yaml", _user_config(tmp_path, prune={"criteria": ["l1", "fpgm"]}))
    assert main(["search", str(changed), "--study-name", "other"]) == 0, capsys.readouterr().err
    storage = f"sqlite:///{output / 'study.db'}"
    assert sorted(optuna.get_all_study_names(storage)) == ["other", "tiny"]
    other = optuna.load_study(study_name="other", storage=storage)
    assert other.user_attrs["definition"]["search space"]["prune.criteria"] == ["l1", "fpgm"]
    assert {name: (output / name).read_bytes() for name in first} == first  # the first study's record is kept
    assert yaml.safe_load((output / "config.other.resolved.yaml").read_text())["study"]["name"] == "other"
    assert len(pd.read_csv(output / "trials.other.csv")) == len(other.trials)
    # and each resumes with its own config
    assert main(["search", str(path), "--n-trials", "3"]) == 0
    assert len(_load_study(output).trials) == 3
