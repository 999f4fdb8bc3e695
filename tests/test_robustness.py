from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

import autoprune
from autoprune.config import config_from_dict
from conftest import REPO, tiny_config, write_config
from gated_search import assert_interrupted, gated_config, start_gated_search, wait_for_running_trials

TESTS = Path(__file__).resolve().parent


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def _user_model_config(tmp_path: Path, factory: str, **sections) -> dict:
    config = tiny_config(tmp_path / "run", None, **sections)
    config["model"] = {"factory": f"user_models:{factory}", "input_shape": [1, 16, 16]}
    config["prune"] = {"ignore": ["fc"], "search_space": "uniform", "ratio": [0.0, 0.8], "criteria": ["l1"]}
    return config


@pytest.fixture()
def wrong_weights(tmp_path) -> Path:
    path = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    return path


BAD_INPUTS = {
    "unknown key": ({"prune": {"ratoi": [0.0, 0.5]}}, (), "prune.ratoi"),
    "wrong type": ({"data": {"batch_size": "big"}}, (), "data.batch_size"),
    "ratio above 1": ({"prune": {"ratio": [0.0, 1.5]}}, (), "prune.ratio[1]"),
    "ratio below 0": ({"prune": {"ratio": [-0.5, 0.5]}}, (), "prune.ratio[0]"),
    "reversed ratio": ({"prune": {"ratio": [0.8, 0.2]}}, (), "prune.ratio"),
    "empty criteria": ({"prune": {"criteria": []}}, (), "prune.criteria"),
    "unknown criterion": ({"prune": {"criteria": ["fpmg"]}}, (), "did you mean 'fpgm'"),
    "unknown sampler": ({"study": {"sampler": "nsga"}}, (), "did you mean 'nsga2'"),
    "unknown preset": ({"prune": {"search_space": "per_layr"}}, (), "did you mean 'per_layer'"),
    "unknown metric": ({"metric": "acuracy"}, (), "did you mean 'accuracy'"),
    "unimportable factory": ({"model": {"factory": "no_such_pkg.models:net", "builtin": None}}, (), "model.factory"),
    "factory returns a non-module": ({"model": {"factory": "user_models:not_a_module", "builtin": None}}, (), "model.factory"),
    "missing weights file": ({"model": {"weights": "/nonexistent/base.pt"}}, (), "model.weights"),
    "weights that do not fit": ({}, ("wrong_weights",), "do not fit"),
    "zero trials": ({"study": {"n_trials": 0}}, (), "study.n_trials"),
    "negative trials flag": ({}, ("--n-trials", "-2"), "--n-trials"),
    "bad timeout flag": ({}, ("--timeout", "soon"), "--timeout"),
    "output is under a file": ({"output": "OUTPUT_UNDER_FILE"}, (), "output"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS), ids=list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_creates_nothing(tmp_path, case, request):
    sections, extra, expected = BAD_INPUTS[case]
    work = tmp_path / "work"
    work.mkdir()
    config = tiny_config(work / "run", None, **{k: v for k, v in sections.items() if k != "output"})
    if "output" in sections:
        (work / "a_file").write_text("x")
        config["output"] = str(work / "a_file" / "run")
    if extra == ("wrong_weights",):
        config["model"]["weights"] = str(request.getfixturevalue("wrong_weights"))
        extra = ()
    path = write_config(tmp_path / "config.yaml", config)
    before = _files(work)
    result = _cli("search", str(path), *extra, cwd=work)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "Traceback" not in result.stderr
    if not extra:
        assert str(path) in lines[0]  # the line names the config file
    assert _files(work) == before  # no study, output folder or storage


def test_validate_checks_without_running_and_warns_on_globs_that_match_nothing(tmp_path, base_weights):
    config = tiny_config(tmp_path / "run", base_weights, prune={"ignore": ["fc", "classifier*"]})
    result = _cli("validate", str(write_config(tmp_path / "c.yaml", config)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "OK; 9 prunable groups" in result.stdout
    assert "warning: prune.ignore: glob 'classifier*' matches no module" in result.stderr
    assert not (tmp_path / "run").exists()
    config["prune"]["ignore"] = ["*"]
    result = _cli("validate", str(write_config(tmp_path / "c.yaml", config)), cwd=tmp_path)
    assert result.returncode == 2 and "no prunable group" in result.stderr


def test_a_model_that_breaks_on_some_plans_fails_those_trials_and_the_study_goes_on(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    config = config_from_dict(_user_model_config(tmp_path, "fragile_net", study={"n_trials": 3}))
    study = autoprune.search(config)
    states = [t.state.name for t in study.trials]
    assert states[:3] == ["COMPLETE", "COMPLETE", "FAIL"]  # uniform 0.25 and 0.5 keep 24 and 16; 0.75 breaks it
    assert states.count("COMPLETE") == 3  # failures do not count towards the study's total: it went on
    failed = study.trials[2]
    assert "RuntimeError: FragileNet needs at least 12 channels, got 8" in failed.user_attrs["error"]
    assert failed.user_attrs["plan"]["groups"]["conv1"] == {"ratio": 0.75, "criterion": "l1"}
    assert (tmp_path / "run" / "trials.csv").read_text().count("FragileNet needs") == states.count("FAIL")


def test_a_nan_loss_fails_the_trial_instead_of_reaching_the_front(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS))
    config = config_from_dict(_user_model_config(tmp_path, "nan_net", study={"n_trials": 3}))
    study = autoprune.search(config)
    assert [t.state.name for t in study.trials][:3] == ["COMPLETE", "COMPLETE", "FAIL"]
    assert study.trials[2].user_attrs["error"].startswith("FloatingPointError: non-finite training loss")
    failed = {t.number for t in study.trials if t.state.name == "FAIL"}
    front = {t.number for t in study.best_trials}
    assert front and not failed & front


def test_the_search_stops_after_too_many_failures_in_a_row(tmp_path):
    config = _user_model_config(tmp_path, "always_broken", study={"n_trials": 20, "max_consecutive_failures": 3})
    result = _cli("search", str(write_config(tmp_path / "c.yaml", config)), cwd=tmp_path)
    assert result.returncode == 2
    assert "stopped after 3 failed trials in a row (last: ValueError: this model cannot run pruned)" in result.stderr
    assert result.stderr.count("warning: trial") == 3 and "Traceback" not in result.stderr
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert [t.state.name for t in study.trials if t.state.is_finished()] == ["FAIL"] * 3


def test_sigint_ends_the_current_trial_keeps_the_rest_and_a_rerun_resumes(tmp_path):
    path = write_config(tmp_path / "c.yaml", gated_config(tmp_path))
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    gate = tmp_path / "gate"
    proc = start_gated_search(path, gate)
    assert proc.stderr is not None
    seen = []
    while not seen or not seen[-1].startswith("trial 2 complete"):
        seen.append(proc.stderr.readline())
        assert seen[-1] or proc.poll() is None, "".join(seen)
    since = datetime.datetime.now()
    gate.touch()  # the next trial waits at the gate: the signal is sure to find it running
    running = wait_for_running_trials(storage, 1, since)
    proc.send_signal(signal.SIGINT)
    out, rest = proc.communicate(timeout=120)
    stderr = "".join(seen) + rest
    assert proc.returncode == 130, stderr
    assert "interrupted;" in stderr and "run the same command to resume" in stderr
    assert "Pareto front" in out and "Traceback" not in stderr
    study = assert_interrupted(storage, running, tmp_path / "run")
    complete = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 3

    gate.unlink()
    again = _cli("search", str(path), "--n-trials", str(len(complete) + 2), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert [t.number for t in study.trials if t.state.name == "COMPLETE"][: len(complete)] == complete
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == len(complete) + 2
    assert sum(bool(t.user_attrs.get("warm_start")) for t in study.trials) == 6  # 3 ratios x 2 criteria, once


def test_sigkill_with_sqlite_loses_no_completed_trial_and_the_stale_one_fails_on_resume(tmp_path, base_weights):
    config = tiny_config(
        tmp_path / "run",
        base_weights,
        prune={"criteria": ["l1", "l2"]},
        study={"n_trials": 30},
        workers={"heartbeat_interval": 1, "grace_period": 2},
    )
    path = write_config(tmp_path / "c.yaml", config)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "search", str(path)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.stderr.readline().startswith("trial 1 complete"):
            break
    time.sleep(0.5)  # into trial 2
    proc.kill()
    proc.wait(timeout=60)
    storage = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    study = optuna.load_study(study_name="tiny", storage=storage)
    complete = [t.number for t in study.trials if t.state.name == "COMPLETE"]
    stale = [t.number for t in study.trials if t.state.name == "RUNNING"]
    assert len(complete) >= 2 and len(stale) == 1

    time.sleep(3)  # past the grace period
    again = _cli("search", str(path), "--n-trials", str(len(complete) + 1), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.trials[stale[0]].state.name == "FAIL"
    assert [t.number for t in study.trials if t.state.name == "COMPLETE"][: len(complete)] == complete
    assert sum(t.state.name == "COMPLETE" for t in study.trials) == len(complete) + 1
