"""Searches on ``gated_models:gated_net`` in a subprocess, for the signal tests: hold trials at the gate, find
them running in the storage, signal, then check that each was failed as "interrupted"."""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from autoprune.study import open_storage
from conftest import REPO, tiny_config
from gated_models import GATE_ENV

TESTS = Path(__file__).resolve().parent


def gated_config(tmp_path: Path, study: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """A search on ``gated_models:gated_net``: every trial waits in its fine-tune while the gate file exists."""
    config = tiny_config(tmp_path / "run", None, study={"n_trials": 30, **(study or {})}, **sections)
    config["model"] = {"factory": "gated_models:gated_net", "input_shape": [1, 16, 16]}
    # Every plan removes channels (ratio >= 0.2), so every trial meets the gate.
    config["prune"] = {"ignore": ["fc"], "search_space": "uniform", "ratio": [0.2, 0.8], "criteria": ["l1", "l2"]}
    return config


def start_gated_search(path: Path, gate: Path, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]),
        GATE_ENV: str(gate),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "autoprune", "search", str(path), *args],
        cwd=path.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job ignores SIGINT, and Python keeps an inherited "ignore"; restore the default.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        start_new_session=new_session,
    )


def wait_for_running_trials(storage: str, count: int, since: datetime.datetime, timeout: float = 300) -> list[int]:
    """The numbers of ``count`` trials RUNNING in their objective that started at or after ``since`` (so they
    meet the gate), in the SQLite ``storage``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study = None
        database = Path(storage.removeprefix("sqlite:///"))
        if database.exists():  # opening it earlier would create it
            try:  # open_storage: the search may be creating the tables right now
                study = optuna.load_study(study_name="tiny", storage=open_storage(storage))
            except KeyError:  # not created yet
                pass
        if study is not None:
            running = [
                t.number
                for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                # "plan" is set inside the objective, which then waits at the gate
                if t.datetime_start is not None and t.datetime_start >= since and "plan" in t.user_attrs
            ]
            if len(running) >= count:
                return running
        time.sleep(0.1)
    raise AssertionError(f"no {count} trials running within {timeout}s")


def assert_interrupted(storage: str, running: list[int], run: Path) -> optuna.Study:
    """The trials running at the signal failed as "interrupted", none is left RUNNING, trials.csv has them."""
    study = optuna.load_study(study_name="tiny", storage=storage)
    for number in running:
        trial = study.trials[number]
        assert trial.state.name == "FAIL" and trial.user_attrs.get("error") == "interrupted", (number, trial.state)
    assert all(t.user_attrs.get("error") == "interrupted" for t in study.trials if t.state.name == "FAIL")
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]
    frame = pd.read_csv(run / "trials.csv")
    assert set(running) <= set(frame.loc[frame["state"] == "FAIL", "number"])
    return study
