"""Latency as an objective and a budget: measured per trial, cached by architecture in the study, a user backend
called with the example inputs, max_latency sparing the fine-tune, export --max-latency, the report's section.

A user backend that returns each model's parameter count as its "seconds" makes the latency axis exact, so the
constraint's outcome does not depend on this machine's timing; no test asserts a timing."""

from __future__ import annotations

import json
import sys
import uuid

import optuna
import pytest
import torch
from conftest import tiny_config, write_config
from torch import nn

import autoprune
from autoprune import ConfigError
from autoprune.config import config_from_dict, load_config
from autoprune.evaluate import CPU, LatencyRun, measure_latency
from autoprune.export import Selection, export_model, select_trial
from autoprune.report import LATENCY_FILE, collect, write_report
from autoprune.plan import PruningPlan
from autoprune.study import FinetuneBudget, check_registered_names, evaluate_plan, prepare_task
from autoprune.study._latency import CACHE_PREFIX, StudyLatencyCache, latency_meter

BACKEND = '''
import torch

CALLS = []


def by_params(model, example_inputs):
    """A deterministic latency: one nanosecond per parameter; remembers what it was called with."""
    CALLS.append({"inputs": example_inputs, "params": sum(p.numel() for p in model.parameters()), "training": model.training})
    return sum(p.numel() for p in model.parameters()) * 1e-9
'''
MAX_LATENCY = 0.3  # uniform 0.25 keeps ~0.56 of the params: over budget; 0.5 and 0.75 are within


def _config(tmp_path, base_weights, **sections):
    # 8x8 inputs, the uniform space, two criteria: the 6 warm-start trials are 3 architectures, each twice.
    merged: dict = {
        "model": {"input_shape": [1, 8, 8]},
        "data": {"options": {"size": 8}},
        "prune": {"search_space": "uniform", "criteria": ["l1", "l2"]},
        "finetune": {"epochs": 1, "bn_recalibration_batches": 2},
        "study": {"n_trials": 6},
    }
    for key, value in sections.items():
        merged[key] = {**merged[key], **value} if isinstance(value, dict) and key in merged else value
    return tiny_config(tmp_path / "run", base_weights, **merged)


@pytest.fixture(scope="module")
def budgeted(tmp_path_factory, base_weights):
    """A search with a user backend (written beside the config) and max_latency; returns the study, config, the
    backend module (its CALLS record every measurement, the later tests' too) and a copy of the calls the search
    made, taken when it finished: what a test reads of the search does not depend on which tests ran before it."""
    tmp_path = tmp_path_factory.mktemp("latency")
    module = f"latency_backend_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BACKEND)
    raw = _config(
        tmp_path,
        base_weights,
        constraints={"max_latency": MAX_LATENCY},
        latency={"backend": f"{module}:by_params", "batch_size": 2, "runs": 3, "warmup": 1},
        export={"epochs": 0, "bn_recalibration_batches": 2, "onnx_exporter": "off"},
    )
    config = load_config(write_config(tmp_path / "config.yaml", raw))
    study = autoprune.search(config)
    backend = sys.modules[module]
    return study, config, backend, list(backend.CALLS)


def test_a_latency_objective_search_records_relative_and_absolute_latency_and_spread(tmp_path, base_weights):
    raw = _config(
        tmp_path,
        base_weights,
        objectives=["metric", "latency"],
        latency={"runs": 3, "warmup": 1},
        prune={"criteria": ["l1"]},
        study={"n_trials": 3},
    )
    config = config_from_dict(raw)
    study = autoprune.search(config)
    assert study.metric_names == ["accuracy", "latency (relative)"]
    for trial in study.trials:
        attrs = trial.user_attrs
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.values[1] == attrs["latency_relative"] == attrs["latency_ms"] / attrs["latency_base_ms"]
        assert attrs["latency_ms"] > 0 and attrs["latency_spread"] >= 0
        assert attrs["latency"]["backend"] == "torch" and attrs["latency"]["threads"] == 1 and attrs["latency"]["runs"] == 3
        assert attrs["seconds"]["latency"] > 0  # three ratios, three architectures: each measured
    assert study.user_attrs["definition"]["objectives"]["latency.backend"] == "torch"


def test_max_latency_measures_every_candidate_but_fine_tunes_only_those_within_budget(budgeted):
    study, _, _, _ = budgeted
    over = [t for t in study.trials if t.user_attrs["latency_relative"] > MAX_LATENCY]
    within = [t for t in study.trials if t.user_attrs["latency_relative"] <= MAX_LATENCY]
    assert over and within
    for trial in over:
        assert trial.user_attrs["feasible"] is False and "finetune" not in trial.user_attrs["seconds"]
        assert trial.constraints["max_latency"] == pytest.approx(trial.user_attrs["latency_relative"] - MAX_LATENCY)
    for trial in within:
        assert trial.user_attrs["feasible"] is True and trial.user_attrs["seconds"]["finetune"] > 0
    # The user backend's figure is parameters x 1 ns: latency relative to the base is the params ratio.
    for trial in study.trials:
        assert trial.user_attrs["latency_relative"] == pytest.approx(trial.user_attrs["params_relative"])
        assert trial.user_attrs["latency_spread"] == 0.0  # one figure per call: no spread to report


def test_the_cache_measures_a_repeated_architecture_once_and_lives_in_the_study(budgeted):
    study, config, backend, search_calls = budgeted
    architectures = {json.dumps(t.user_attrs["channels"], sort_keys=True) for t in study.trials}
    assert len(study.trials) == 6 and len(architectures) == 3
    assert len(search_calls) == 1 + 3  # the base, then each architecture once
    assert sum(t.user_attrs["latency_cached"] for t in study.trials) == 3
    assert len(StudyLatencyCache(study).keys()) == 4
    assert all(k.startswith(CACHE_PREFIX) for k in study.user_attrs if k.startswith("latency"))
    # Another process (a worker, a resumed search) reads the study's figures: no new measurement.
    stored = optuna.load_study(study_name=config.study_name, storage=config.storage_url)
    meter = latency_meter(prepare_task(config), StudyLatencyCache(stored))
    calls_before = len(backend.CALLS)
    assert meter is not None and meter.base().median_ms > 0
    assert meter.measured == 0 and len(backend.CALLS) == calls_before


def test_plans_run_without_a_study_share_one_meter_kept_on_the_task(budgeted):
    _, config, backend, _ = budgeted
    task = prepare_task(config)
    assert task.process_meter is None
    calls_before = len(backend.CALLS)
    first = evaluate_plan(task, PruningPlan.uniform(task.base.groups, 0.5, "l1"), seed=0, finetune=FinetuneBudget(0))
    meter = task.process_meter
    assert meter is not None and first.latency is not None
    evaluate_plan(task, PruningPlan.uniform(task.base.groups, 0.75, "l1"), seed=0, finetune=FinetuneBudget(0))
    assert task.process_meter is meter  # the base was timed once: base + two architectures
    assert len(backend.CALLS) - calls_before == 3


def test_a_user_backend_is_called_with_the_example_inputs_at_the_configured_batch(budgeted):
    _, _, _, search_calls = budgeted
    assert len(search_calls) == 4  # the base and three architectures: the loop below has calls to check
    for call in search_calls:
        assert isinstance(call["inputs"], torch.Tensor) and tuple(call["inputs"].shape) == (2, 1, 8, 8)
        assert call["training"] is False


def test_a_bad_backend_name_is_a_one_line_error_naming_the_key(tmp_path, base_weights):
    config = config_from_dict(_config(tmp_path, base_weights, latency={"backend": "onnxruntim"}))
    with pytest.raises(ConfigError) as info:
        check_registered_names(config)  # what resolve (search, validate, export) runs first
    message = str(info.value)
    assert "\n" not in message and "latency.backend" in message and "did you mean 'onnxruntime'" in message
    with pytest.raises(ConfigError, match="objectives"):
        check_registered_names(config_from_dict(_config(tmp_path, base_weights, objectives=["metric", "speed"])))


@pytest.mark.parametrize("old", ["latency_runs", "latency_warmup", "latency_threads"])
def test_the_old_export_latency_keys_are_one_line_naming_the_latency_key(tmp_path, base_weights, old):
    with pytest.raises(ConfigError) as info:
        config_from_dict(_config(tmp_path, base_weights, export={old: 3}))
    new = "latency." + old.removeprefix("latency_")
    assert str(info.value).endswith(f"export: export.{old} is now {new}") and "\n" not in str(info.value)


def test_export_times_through_the_one_latency_meter_as_the_latency_section_says(budgeted, tmp_path):
    _, config, _, _ = budgeted
    result = export_model(config, Selection("max_latency", 0.3), tmp_path / "export-meter")
    cpu = result.record["latency"]
    assert (cpu["runs"], cpu["warmup"], cpu["threads"], cpu["device"]) == (3, 1, config.latency.threads, "cpu")
    assert cpu["before_ms"] > 0 and cpu["speedup"] == pytest.approx(cpu["before_ms"] / cpu["after_ms"])


def test_a_user_backend_that_returns_no_seconds_is_one_line_naming_it(tmp_path, base_weights):
    (tmp_path / "bad_backend.py").write_text("def none(model, inputs):\n    return None\n")
    raw = _config(tmp_path, base_weights, latency={"backend": "bad_backend:none"}, constraints={"max_latency": 0.5})
    config = load_config(write_config(tmp_path / "c.yaml", raw))
    task = prepare_task(config)
    meter = latency_meter(task)
    with pytest.raises(ConfigError, match="bad_backend:none.*returned None; expected seconds") as info:
        meter.base()
    assert info.value.key == "latency.backend"


def test_a_user_backend_that_raises_is_one_line_naming_it(tmp_path, base_weights):
    (tmp_path / "raising_backend.py").write_text("def boom(model, inputs):\n    raise RuntimeError('board offline')\n")
    raw = _config(tmp_path, base_weights, latency={"backend": "raising_backend:boom"}, constraints={"max_latency": 0.5})
    config = load_config(write_config(tmp_path / "c.yaml", raw))
    meter = latency_meter(prepare_task(config))
    with pytest.raises(ConfigError, match="raising_backend:boom.* raised RuntimeError: board offline") as info:
        meter.base()
    assert info.value.key == "latency.backend"
    assert "\n" not in str(info.value)


class _Pair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 8), nn.Linear(3, 8)

    def forward(self, x, y):
        return self.a(x) + self.b(y)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_the_builtin_backends_time_any_example_input_at_the_configured_batch(backend):
    example = {"x": torch.randn(1, 4), "y": torch.randn(1, 3)}
    measured = measure_latency(_Pair(), example, LatencyRun(CPU, runs=3, warmup=1), backend=backend, batch_size=5)
    assert measured.batch == 5 and measured.runs == 3 and measured.median_ms > 0
    assert measured.device == "cpu" and measured.threads == 1 and measured.q1_ms <= measured.median_ms <= measured.q3_ms


def test_export_max_latency_picks_the_best_within_budget_and_remeasures_it(budgeted, tmp_path):
    study, config, _, _ = budgeted
    within = [t for t in study.trials if t.user_attrs["feasible"] and t.user_attrs["latency_relative"] <= 0.3]
    chosen = select_trial(study, Selection("max_latency", 0.3))
    assert chosen.user_attrs["latency_relative"] <= 0.3
    assert chosen.values[0] == max(t.values[0] for t in within)
    with pytest.raises(ConfigError, match="no valid trial has latency <= 0.01") as info:
        select_trial(study, Selection("max_latency", 0.01))
    assert info.value.key == "--max-latency"

    result = export_model(config, Selection("max_latency", 0.3), tmp_path / "export")
    record = result.record["latency_search"]
    assert record["search"]["relative"] == chosen.user_attrs["latency_relative"]
    assert record["export"]["relative"] == pytest.approx(chosen.user_attrs["latency_relative"])  # exact backend
    assert "in the search" in result.summary() and "re-measured" in result.summary()


def test_export_max_latency_on_a_study_without_latency_says_how_to_measure_it():
    study = optuna.create_study(directions=["maximize", "minimize"])
    attrs = {"plan": {"groups": {}}, "macs_relative": 0.5, "feasible": True}
    study.add_trial(optuna.trial.create_trial(values=[0.9, 0.5], user_attrs=attrs))
    with pytest.raises(ConfigError, match="measured no latency; search with objectives: \\[metric, latency\\]"):
        select_trial(study, Selection("max_latency", 0.5))


def test_the_report_plots_latency_and_states_its_noise_and_rank_correlation(budgeted, tmp_path):
    study, _, _, _ = budgeted
    written = write_report(study, tmp_path / "report")
    assert tmp_path / "report" / LATENCY_FILE in written
    assert (tmp_path / "report" / LATENCY_FILE).read_bytes().startswith(b"\x89PNG")
    data = collect(study)
    # The exact backend makes latency the params ratio, which orders the trials exactly as MACs do.
    assert data.latency_rank_correlation() == pytest.approx(1.0)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "## Latency" in text and "Spearman rank correlation over 6 measured trials: **1.000**" in text
    assert "3 trials reused the measurement" in text and "latency budget" in text
