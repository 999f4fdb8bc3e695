"""The benchmark scripts run end to end on a tiny budget, and sweeps score plans exactly as trials do."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import optuna
import pytest

from autoprune.config import config_from_dict
from autoprune.data import digits
from autoprune.plan import PruningPlan
from autoprune.study import Objective, enqueue_warm_start, evaluate_plan, make_sampler, prepare_task, trial_seed

from conftest import REPO, tiny_config, write_config


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "ignore", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_evaluate_plan_scores_a_plan_exactly_as_the_trial_that_sampled_it(tmp_path, base_weights):
    config = config_from_dict(tiny_config(tmp_path, base_weights, prune={"search_space": "uniform"}))
    task = prepare_task(config)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("random", 0))
    enqueue_warm_start(study, task)  # trial 0: uniform 0.25, l1
    study.optimize(Objective(task), n_trials=1)
    trial = study.trials[0]
    plan = PruningPlan.from_dict(trial.user_attrs["plan"])
    assert plan == PruningPlan.uniform(task.groups, 0.25, "l1")
    # The same task, after another candidate has been fine-tuned on it: a candidate's run depends on its seed
    # alone, not on the shuffling passes made before it in the process (a sweep, other trials, an export).
    other = evaluate_plan(task, PruningPlan.uniform(task.groups, 0.5, "l2"), seed=7)
    assert other.metric != trial.values[0] or other.cost != trial.values[1]
    result = evaluate_plan(task, plan, seed=trial_seed(config.study.seed, trial.number))
    assert result.feasible and result.metric == trial.values[0] and result.cost == trial.values[1]
    assert result.metric_before_finetune == trial.user_attrs["metric_before_finetune"]
    assert set(result.seconds) == set(trial.user_attrs["seconds"])


def test_noisy_digits_differ_from_the_clean_ones_and_bad_noise_is_a_config_error():
    clean, noisy = digits(seed=0), digits(seed=0, noise=1.0)
    x_clean, x_noisy = clean.train.dataset.tensors[0], noisy.train.dataset.tensors[0]
    assert x_clean.shape == x_noisy.shape
    assert 0.9 < float((x_noisy - x_clean).std()) < 1.1  # std 1.0 noise, fixed by the seed
    assert bool((digits(seed=0, noise=1.0).train.dataset.tensors[0] == x_noisy).all())
    from autoprune.errors import ConfigError

    with pytest.raises(ConfigError, match="data.options.noise"):
        digits(noise=-0.5)


def test_benchmark_search_runs_on_a_tiny_budget_and_combines(tmp_path, base_weights):
    raw = tiny_config(tmp_path / "run", base_weights, finetune={"epochs": 0, "bn_recalibration_batches": 2})
    config = write_config(tmp_path / "c.yaml", raw)
    out = tmp_path / "bench"
    done = _script(
        "experiments/benchmark_search.py", str(config), "--budget", "2", "--seeds", "0", "--presets", "per_stage",
        "--samplers", "random", "--criteria", "l1", "--ratios", "0.5", "0.8", "--out", str(out),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    methods = {r["method"]: r for r in results["runs"]}
    assert set(methods) == {"sweep-l1", "random-per_layer", "per_stage-random"}
    assert methods["sweep-l1"]["finetunes"] == 2 and len(methods["sweep-l1"]["points"]) == 2
    assert methods["per_stage-random"]["finetunes"] == 2
    for run in results["runs"]:
        assert 0.0 < run["hypervolume"] < 1.0
    assert (out / "fronts.png").stat().st_size > 0
    assert "hypervolume" in (out / "summary.md").read_text() and "target >= 1.05x" in done.stdout
    union = float(re.search(r"union of every candidate evaluated \(oracle\): hypervolume ([0-9.]+)", done.stdout)[1])
    perfect = float(re.search(r"perfect front \(metric 1.0 [^)]*\): ([0-9.]+)", done.stdout)[1])
    assert max(run["hypervolume"] for run in results["runs"]) <= union + 1e-4 <= perfect + 2e-4

    merged = tmp_path / "merged"
    combined = _script("experiments/benchmark_search.py", "combine", str(out), "--out", str(merged))
    assert combined.returncode == 0, combined.stderr[-2000:]
    assert (merged / "summary.md").read_text().count("| sweep-l1 |") == 1
