"""Users' own criteria: registered from Python, or installed through the ``autoprune.criteria`` entry point."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import optuna
import pytest

import autoprune
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from conftest import REPO, tiny_config

CALLS: list[str] = []
# Untrained, not fine-tuned: these tests check which criterion scores the channels, not accuracy.
QUICK = {"base_training": {"epochs": 0}, "finetune": {"epochs": 0, "bn_recalibration_batches": 1}}


@autoprune.register_criterion("test_max_abs")
class MaxAbs(autoprune.Criterion):
    def __call__(self, tensors):
        CALLS.append(tensors.name)
        return tensors.weights.abs().amax(dim=1)


def test_a_criterion_registered_in_a_test_module_is_used_by_a_real_search(tmp_path):
    CALLS.clear()
    config = config_from_dict(
        tiny_config(tmp_path / "run", prune={"criteria": ["test_max_abs"]}, study={"n_trials": 1}, **QUICK)
    )
    study = autoprune.search(config)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 1
    for trial in trials:
        assert {g["criterion"] for g in trial.user_attrs["plan"]["groups"].values()} == {"test_max_abs"}
    # it scored groups of the real model during the trial (groups pruned at ratio 0 are not scored)
    assert CALLS and set(CALLS) <= set(trials[0].user_attrs["plan"]["groups"])


def test_a_search_with_taylor_gets_gradients_from_the_training_data(tmp_path):
    config = config_from_dict(
        tiny_config(
            tmp_path / "run",
            prune={"criteria": ["taylor"], "search_space": "uniform", "ratio": [0.3, 0.6], "gradient_batches": 2},
            study={"n_trials": 1},
            **QUICK,
        )
    )
    study = autoprune.search(config)
    (trial,) = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert trial.user_attrs["macs_relative"] < 0.7 and trial.user_attrs["plan"]["groups"]["conv1"]["criterion"] == "taylor"


def test_an_unknown_criterion_in_a_config_lists_the_known_ones_with_did_you_mean(tmp_path):
    with pytest.raises(ConfigError, match=r"prune.criteria\[0\].*did you mean 'bn_scale'.*known: .*lamp.*taylor"):
        config_from_dict(tiny_config(tmp_path, prune={"criteria": ["bn_scal"]}))


def test_a_criterion_from_an_installed_entry_point_is_found_and_used(tmp_path):
    # A real installed distribution (a .dist-info folder on sys.path), found through importlib.metadata.
    site = tmp_path / "site"
    (site / "ext_crit").mkdir(parents=True)
    (site / "ext_crit" / "__init__.py").write_text(
        textwrap.dedent(
            """
            import autoprune

            class SmallestFirst(autoprune.Criterion):
                def __call__(self, tensors):
                    return -tensors.weights.abs().sum(dim=1)
            """
        )
    )
    info = site / "ext_crit-1.0.dist-info"
    info.mkdir()
    info.joinpath("METADATA").write_text("Metadata-Version: 2.1\nName: ext-crit\nVersion: 1.0\n")
    info.joinpath("entry_points.txt").write_text(
        "[autoprune.criteria]\nsmallest_first = ext_crit:SmallestFirst\nbroken_one = ext_crit:Missing\n"
    )
    script = textwrap.dedent(
        """
        import torch, autoprune
        from torch import nn
        print(sorted(autoprune.available_criteria()))
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 6, 1), nn.ReLU(), nn.Conv2d(6, 2, 1)).eval()
        pruned, _ = autoprune.apply_plan(model, torch.zeros(1, 3, 2, 2), autoprune.PruningPlan({"0": (0.5, "smallest_first")}))
        norms = model[0].weight.detach().abs().flatten(1).sum(dim=1)
        print(torch.equal(pruned[0].weight, model[0].weight[sorted(torch.argsort(norms)[:3].tolist())]))
        try:
            autoprune.PruningPlan({"0": (0.5, "broken_one")})
        except autoprune.ConfigError as exc:
            print(exc)
        try:
            autoprune.PruningPlan({"0": (0.5, "smallest_frist")})
        except autoprune.ConfigError as exc:
            print(exc)
        """
    )
    env_path = f"{site}:{REPO}"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env={"PYTHONPATH": env_path, "PATH": ""}, timeout=120
    )
    assert result.returncode == 0, result.stderr
    listed, kept_largest, broken, typo = result.stdout.strip().splitlines()
    assert "smallest_first" in listed and "broken_one" not in listed
    assert kept_largest == "True"  # the plugin's scores chose the pruned filters (it keeps the smallest L1)
    assert "broken_one" in broken and "failed to load" in broken and "Missing" in broken
    assert "did you mean 'smallest_first'" in typo
