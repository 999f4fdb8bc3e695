"""The benchmark scripts run end to end on a tiny budget, and sweeps score plans exactly as trials do."""

from __future__ import annotations

import json
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
    assert plan == PruningPlan.uniform(task.base.groups, 0.25, "l1")
    # The same task, after another candidate has been fine-tuned on it: a candidate's run depends on its seed
    # alone, not on the shuffling passes made before it in the process (a sweep, other trials, an export).
    other = evaluate_plan(task, PruningPlan.uniform(task.base.groups, 0.5, "l2"), seed=7)
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


def test_benchmark_search_spends_equal_compute_per_arm_and_combines(tmp_path, base_weights):
    raw = tiny_config(tmp_path / "run", base_weights, finetune={"epochs": 0, "steps": 2, "bn_recalibration_batches": 2})
    config = write_config(tmp_path / "c.yaml", raw)
    out = tmp_path / "bench"
    done = _script(
        "experiments/benchmark_search.py", str(config), "--seeds", "0", "--search", "single:per_stage:random",
        "staged:global_rank:random:1", "--criteria", "l1", "--ratios", "0.5", "--global-criteria", "l2",
        "--global-targets", "0.3", "--random", "--out", str(out),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    runs = {r["method"]: r for r in results["runs"]}
    assert set(runs) == {"sweep-l1", "global-l2", "baselines", "random-per_layer", "single-per_stage-random",
                         "staged-global_rank-random-r1"}
    union = runs["baselines"]
    parts = [r for r in results["runs"] if r["kind"] == "part"]
    assert len(union["points"]) == sum(len(r["points"]) for r in parts) == 2
    # one candidate = 2 steps + 2 recalibration batches + twice the validation batches (scored before and after)
    per_candidate = results["recipe"]
    assert per_candidate["steps"] == 2 and per_candidate["forward_batches"] > 2
    for arm in ("random-per_layer", "single-per_stage-random"):  # single-stage arms: exactly the baselines' compute
        assert (runs[arm]["steps"], runs[arm]["forward_batches"]) == (union["steps"], union["forward_batches"])
        assert len(runs[arm]["points"]) == len(union["points"])
    # the staged arm: the same budget in batches (steps + forward batches), less than one screen left over,
    # and only its fine-tuned finalists on its front
    staged = runs["staged-global_rank-random-r1"]
    budget = union["steps"] + union["forward_batches"]
    screen = per_candidate["forward_batches"]  # a screen (recalibrate, score once) costs less than this
    assert budget - screen < staged["steps"] + staged["forward_batches"] <= budget
    assert 1 <= len(staged["points"]) <= 2 and staged["steps"] < union["steps"]
    for run in results["runs"]:
        assert 0.0 < run["hv"] < 1.0 and 0.0 < run["hv_log"] < 1.0
    assert (out / "fronts.png").stat().st_size > 0
    assert "HV log-MACs" in (out / "summary.md").read_text() and "target >= 1.05x" in done.stdout

    # a variant's run: no baselines, the compute of --budget baseline candidates, merged beside the full run
    variant = _script(
        "experiments/benchmark_search.py", str(config), "--seeds", "0", "--budget", "2", "--search",
        "single:uniform:random", "--tag=-v", "--out", str(tmp_path / "variant"),
    )
    assert variant.returncode == 0, variant.stderr[-2000:]
    arms = json.loads((tmp_path / "variant" / "results.json").read_text())["runs"]
    assert [(r["method"], r["steps"]) for r in arms] == [("single-uniform-random-v", union["steps"])]
    merged = tmp_path / "merged"
    combined = _script("experiments/benchmark_search.py", "combine", str(out), str(tmp_path / "variant"), "--out", str(merged))
    assert combined.returncode == 0, combined.stderr[-2000:]
    summary = (merged / "summary.md").read_text()
    assert summary.count("| baselines |") == 1 and summary.count("| single-uniform-random-v |") == 1


def test_log_macs_axis_spans_one_percent_to_the_base():
    sys.path.insert(0, str(REPO / "experiments"))
    from _bench_report import Run, log_macs

    assert log_macs(1.0) == 1.0 and log_macs(0.1) == pytest.approx(0.5) and log_macs(0.001) == 0.0
    low, high = Run("a", "search", 0, [(0.8, 0.02)], 1, 1, 0.0), Run("b", "search", 0, [(0.8, 0.5)], 1, 1, 0.0)
    # on the linear axis the two points differ by 0.48 * 0.8; on the log axis the low end weighs far more
    assert low.hv - high.hv == pytest.approx(0.48 * 0.8)
    assert low.hv_log - high.hv_log == pytest.approx((log_macs(0.5) - log_macs(0.02)) * 0.8)
    assert low.hv_log - high.hv_log > low.hv - high.hv


def test_allocation_spread_prints_plan_and_seed_spreads_for_plans_of_equal_macs(tmp_path, base_weights):
    raw = tiny_config(tmp_path / "run", base_weights, finetune={"epochs": 0, "steps": 2, "bn_recalibration_batches": 2})
    config = write_config(tmp_path / "c.yaml", raw)
    done = _script(
        "experiments/allocation_spread.py", str(config), "--bands", "0.3", "--plans", "2", "--seeds", "2",
        "--out", str(tmp_path / "spread"),
    )
    assert done.returncode == 0, done.stderr[-2000:]
    plans = [line for line in done.stdout.splitlines() if line.startswith("  band 0.3")]
    assert len(plans) == 2 and "uniform" in plans[0]
    for line in plans:  # each plan within 10% of the target MACs
        assert abs(float(line.split("macs ")[1].split()[0]) - 0.3) <= 0.03
    assert "plan spread sd" in done.stdout and "seed spread sd" in done.stdout
