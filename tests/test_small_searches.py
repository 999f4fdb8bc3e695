"""A newcomer's first searches: any study.n_trials >= 1 runs the default search on the digits example, shrunk in a
stated order with one line naming what it dropped; what cannot run is refused before anything is trained or
written; the trial count the compute buys is what the study reports; a refused resume writes nothing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from conftest import REPO, run_cli
from optuna.trial import TrialState

import autoprune
from autoprune.config import load_config
from autoprune.errors import ConfigError
from autoprune.study import FINISHED

EXAMPLE = REPO / "experiments" / "digits" / "config.yaml"


def _example(tmp_path: Path, base_weights: Path | None, **overrides) -> autoprune.Config:
    weights = None if base_weights is None else str(base_weights)
    return load_config(EXAMPLE, {"output": str(tmp_path / "run"), "model.weights": weights, **overrides})


def _study(config) -> optuna.Study:
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url)


# What each small n_trials keeps of the default search (4 budgets, 5 baselines) on the digits example, where a
# screen costs 23 batches and a single-search trial 46: the shrink line's words, and the search mode.
SHRUNK = {
    1: ("single", "running a single search of 1 trial instead (study.search: single)"),
    2: ("budgeted", "dropped budgets 0.25, 0.1, 0.05; baselines uniform-l1, uniform-fpgm, global-l1"),
    3: ("budgeted", "dropped budgets 0.25, 0.1, 0.05; baselines uniform-fpgm;"),
    5: ("budgeted", "dropped budgets 0.25, 0.1, 0.05; promotion"),
}


@pytest.mark.parametrize("n_trials", sorted(SHRUNK))
def test_a_small_n_trials_runs_the_default_search_shrunk_with_one_line(tmp_path, base_weights, n_trials):
    config = _example(tmp_path, base_weights, **{"study.n_trials": n_trials})
    assert config.study.search == "budgeted"  # the default
    lines: list[str] = []
    study = autoprune.search(config, log=lines.append)
    mode, dropped = SHRUNK[n_trials]
    shrink = [line for line in lines if "the whole search needs study.n_trials 14" in line]
    assert len(shrink) == 1 and dropped in shrink[0] and shrink[0].startswith(f"warning: study.n_trials {n_trials} ")
    finished = study.get_trials(deepcopy=False, states=FINISHED)
    assert all(t.state == TrialState.COMPLETE for t in finished)
    if mode == "single":
        assert len(finished) == n_trials and "compute" not in study.user_attrs
        return
    # The compute asked for, in single-search trials, and the trial count it buys: what the study holds.
    compute = study.user_attrs["compute"]
    assert compute["n_trials"] == n_trials and compute["batches"] == 46 * n_trials
    assert len(finished) == compute["trials"] == compute["screens"] + compute["finetunes"]
    assert any(f"buy {compute['trials']} trials" in line for line in lines)
    assert any(f"the study holds {len(finished)} trials" in line for line in lines)
    assert {t.params["budget"] for t in finished} == {0.5}


def _example_file(tmp_path: Path, base_weights: Path | None, *, study: str = "") -> Path:
    """The digits example's config file, with its output in ``tmp_path`` and ``base_weights`` (null: trained)."""
    text = EXAMPLE.read_text().replace("output: runs/digits-resnet", f"output: {tmp_path / 'run'}")
    if base_weights is not None:
        text = text.replace("weights: null", f"weights: {base_weights}")
    path = tmp_path / "config.yaml"
    path.write_text(text.replace("study: {sampler: tpe, n_trials: 40,", f"study: {{sampler: tpe, n_trials: 40,{study}"))
    return path


def test_validate_names_the_compute_and_the_trial_count_it_buys(tmp_path, base_weights):
    found = run_cli("validate", str(_example_file(tmp_path, base_weights)))
    assert found.returncode == 0, found.stderr
    bought = "(study.n_trials 40: the compute of 40 single-search trials) buy 56 trials (40 screens, 16 fine-tunes)"
    assert bought in found.stdout


def test_a_refused_small_compute_trains_nothing_and_writes_nothing(tmp_path):
    # model.weights null: a search that got past the check would train the base model first.
    path = _example_file(tmp_path, None, study=" stages: {budget: 30},")
    for command in ("validate", "search"):
        result = run_cli(command, str(path))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("autoprune: error: ") and len(lines) == 1
        assert "study.stages.budget: study.stages.budget 30 batches cannot screen a budget's baselines" in lines[-1]
        assert lines[-1].endswith("(the whole search needs study.stages.budget 644)")
        assert "training the base model" not in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "run").exists()


def test_the_fit_is_refused_for_an_unknown_baseline_naming_the_key(tmp_path, base_weights):
    config = _example(tmp_path, base_weights, **{"study.baselines": ["global-fpgm"]})
    with pytest.raises(ConfigError) as error:
        autoprune.search(config)
    assert error.value.key == "study.baselines" and "global-l1, global-l2" in str(error.value)
    assert not config.output.exists()


@pytest.fixture(scope="module")
def small_study(tmp_path_factory, base_weights):
    """A two-trial-compute default search: one budget, two baselines, one finalist."""
    tmp_path = tmp_path_factory.mktemp("small")
    config = _example(tmp_path, base_weights, **{"study.n_trials": 2})
    autoprune.search(config)
    return tmp_path, config


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ({"study.budgets": [0.4]}, "study.budgets", "was started with another search: [0.5] -> [0.4]"),
        ({"study.search": "single"}, "study.search", "was started with another search: budgeted -> single"),
        ({"study.n_trials": 40}, "study.budgets", "was started with another search: [0.5] -> [0.5, 0.25, 0.1, 0.05]"),
    ],
)
def test_a_refused_resume_writes_nothing(small_study, base_weights, overrides, key, words):
    tmp_path, config = small_study
    run = config.output
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    changed = _example(tmp_path, base_weights, **{"study.n_trials": 2, **overrides})
    with pytest.raises(ConfigError) as error:
        autoprune.search(changed)
    assert error.value.key == key and words in str(error.value) and "\n" not in str(error.value)
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before  # config.resolved.yaml, trials.csv and study.db untouched
