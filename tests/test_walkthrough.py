"""The "Bring your own model" walk-through (docs/own-model.md), as a new user runs it: from another folder, by path."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas

from autoprune.cli import main

EXAMPLE = Path(__file__).resolve().parents[1] / "experiments" / "bring_your_own"


def test_the_bring_your_own_example_validates_from_another_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(EXAMPLE / "config.yaml")]) == 0
    out = capsys.readouterr().out
    assert "3 prunable groups" in out and "output layers (never pruned): head" in out
    assert not (tmp_path / "runs").exists()  # validate writes nothing


def test_the_bring_your_own_example_searches_from_its_own_folder(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "myproject"
    shutil.copytree(EXAMPLE, folder)
    monkeypatch.chdir(folder)
    # The budgeted search (the example's, the default) needs 9 trials' worth of compute for its four budgets.
    code = main(["search", "config.yaml", "--n-trials", "9", "--output", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    trials = pandas.read_csv(tmp_path / "run" / "trials.csv")
    done = trials[trials["state"] == "COMPLETE"]
    assert set(done["budget"]) == {0.5, 0.25, 0.1, 0.05}
    assert (done["cost"] <= done["budget"]).all() and (done["fidelity"] == "finetune").sum() >= 4
