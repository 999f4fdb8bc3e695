"""The latency table: built once per settings and architecture, cached in the run folder and shared by searches
and workers, rebuilt when the backend or batch changes, resumed after an interruption; the prediction it makes;
the staircase ``prune.round_to: auto`` keeps; ``latency.mode: both``.

A user backend that returns each model's parameter count as its "seconds" makes every figure exact, and writes a
line per call to the file ``$TABLE_CALLS`` names, so tests count timings across processes. No test asserts a
timing."""

from __future__ import annotations

import json
import random
import uuid

import optuna
import pytest
from conftest import run_cli, tiny_config, write_config

import autoprune
from autoprune.cli import main
from autoprune.config import SpaceSpec, config_from_dict, load_config
from autoprune.evaluate import LatencyTable
from autoprune.plan import PruningPlan, kept_channels
from autoprune.ranking import ranked_plan
from autoprune.report import collect, write_report
from autoprune.space import SearchSpace
from autoprune.study import TABLE_FOLDER

BACKEND = '''
import os


def by_params(model, example_inputs):
    """One nanosecond per parameter; a line per call in $TABLE_CALLS; fails past $TABLE_FAIL_AFTER calls."""
    log = os.environ.get("TABLE_CALLS")
    if log:
        with open(log, "a") as handle:
            handle.write("call\\n")
        limit = os.environ.get("TABLE_FAIL_AFTER")
        if limit and sum(1 for _ in open(log)) > int(limit):
            raise RuntimeError("the board went away")
    return sum(p.numel() for p in model.parameters()) * 1e-9


def by_params_too(model, example_inputs):
    return by_params(model, example_inputs)
'''


@pytest.fixture
def backend(tmp_path, monkeypatch):
    """The backend module's ``pkg:fn`` name (written beside the configs), with its call log in this test."""
    module = f"table_backend_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(BACKEND)
    calls = tmp_path / "calls.txt"
    monkeypatch.setenv("TABLE_CALLS", str(calls))
    monkeypatch.syspath_prepend(str(tmp_path))
    return module, calls


def _calls(path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _raw(tmp_path, base_weights, module, *, fn="by_params", **latency):
    return tiny_config(
        tmp_path / "run",
        base_weights,
        model={"input_shape": [1, 8, 8]},
        data={"options": {"size": 8}},
        prune={"search_space": "uniform", "criteria": ["l1"], "round_to": "auto"},
        finetune={"epochs": 1, "bn_recalibration_batches": 2},
        objectives=["metric", "latency"],
        latency={"backend": f"{module}:{fn}", "runs": 1, "warmup": 0, "batch_size": 2, "table_points": 4, **latency},
        study={"n_trials": 3},
    )


def _tables(config) -> list:
    return sorted((config.output / TABLE_FOLDER).glob("*.json"))


def test_the_table_is_built_once_and_reused_by_a_second_search_and_by_workers(tmp_path, base_weights, backend):
    module, calls = backend
    path = write_config(tmp_path / "config.yaml", _raw(tmp_path, base_weights, module, mode="predicted"))
    config = load_config(path)
    study = autoprune.search(config)
    built = _calls(calls)
    assert built > 0 and len(_tables(config)) == 1
    table = LatencyTable.from_dict(json.loads(_tables(config)[0].read_text()))
    for trial in study.trials:  # predicted: read off the table, never timed
        attrs = trial.user_attrs
        assert attrs["latency"]["source"] == "predicted"
        assert attrs["latency_ms"] == pytest.approx(table.predict(attrs["channels"], attrs["macs_relative"]))
    autoprune.search(load_config(path, {"study.name": "second"}))
    assert _calls(calls) == built  # the second search read the table
    result = run_cli("search", str(path), "--study-name", "workers", "--workers", "2", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert _calls(calls) == built  # and so did every worker process
    assert len(_tables(config)) == 1


@pytest.mark.parametrize("change", [{"batch_size": 4}, {"fn": "by_params_too"}])
def test_a_new_batch_or_backend_builds_a_new_table(tmp_path, base_weights, backend, change):
    module, calls = backend
    first = config_from_dict(_raw(tmp_path, base_weights, module, mode="predicted"))
    result = main(["profile", str(write_config(tmp_path / "a.yaml", _raw(tmp_path, base_weights, module, mode="predicted")))])
    assert result == 0 and len(_tables(first)) == 1
    built = _calls(calls)
    changed = _raw(tmp_path, base_weights, module, mode="predicted", **change)
    assert main(["profile", str(write_config(tmp_path / "b.yaml", changed))]) == 0
    assert _calls(calls) == 2 * built  # timed again, in full
    assert len(_tables(first)) == 2


def test_an_interrupted_profile_resumes_from_what_it_cached(tmp_path, base_weights, backend, monkeypatch, capsys):
    module, calls = backend
    path = write_config(tmp_path / "config.yaml", _raw(tmp_path, base_weights, module))
    monkeypatch.setenv("TABLE_FAIL_AFTER", "9")
    assert main(["profile", str(path)]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(error) == 1 and "latency.backend" in error[0] and "the board went away" in error[0]
    partial = list((tmp_path / "run" / TABLE_FOLDER).glob("*.partial.jsonl"))
    cached = len(partial[0].read_text().splitlines())
    assert cached >= 3  # the entries timed before the backend failed
    monkeypatch.delenv("TABLE_FAIL_AFTER")
    calls.unlink()
    assert main(["profile", str(path)]) == 0
    resumed = _calls(calls)
    full_dir = tmp_path / "full"
    full_dir.mkdir()
    calls.unlink()
    fresh = _raw(tmp_path, base_weights, module)
    fresh["output"] = str(full_dir / "run")
    assert main(["profile", str(write_config(full_dir / "config.yaml", fresh))]) == 0
    # Only what the interrupted run had not timed: its finished sweep's entries and the base timed after it.
    assert _calls(calls) - resumed == cached + 1
    assert not list((tmp_path / "run" / TABLE_FOLDER).glob("*.partial.jsonl"))


def test_mode_both_records_the_predicted_and_the_timed_latency_of_every_fine_tuned_trial(tmp_path, base_weights, backend):
    module, _ = backend
    config = config_from_dict(_raw(tmp_path, base_weights, module, mode="both"))
    study = autoprune.search(config)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert trials
    for trial in trials:
        attrs = trial.user_attrs
        assert attrs["latency"]["source"] == "predicted" and trial.values[1] == attrs["latency_relative"]
        params = attrs["params"]  # the backend's "seconds" are the parameter count, in nanoseconds
        assert attrs["latency_measured_ms"] == pytest.approx(params * 1e-6)
        assert attrs["latency_measured_relative"] == pytest.approx(params / study.user_attrs["base"]["params"])
    write_report(study, tmp_path / "report")
    assert collect(study).prediction_quality()["trials"] == len(trials)
    assert "predicted against timed" in (tmp_path / "report" / "report.md").read_text()


def _table() -> LatencyTable:
    """Group a (4 channels) and b (8), relative latency and MACs per kept count; b's 6 channels run slower than its
    8 (a staircase); two uniform plans."""
    entries = {"a": {2: (0.6, 0.7), 4: (1.0, 1.0)}, "b": {2: (0.5, 0.6), 4: (0.7, 0.7), 6: (1.2, 0.85), 8: (1.0, 1.0)}}
    return LatencyTable({"groups": {"a": 4, "b": 8}}, 10.0, entries, uniform=((0.5, 0.6), (0.75, 0.8)))


def test_predicted_latency_on_a_constructed_table_is_the_hand_sum():
    table = _table()
    # The uniform curve through (0.5, 0.6), (0.75, 0.8) and (1, 1): at 0.7 MACs, 0.6 + 0.2 * 0.2 / 0.25 = 0.76.
    curve_at_07 = 0.76
    deviation_a, deviation_b = 0.6 - curve_at_07, 0.7 - curve_at_07  # each group alone, against the curve
    assert table.predict({"a": 2, "b": 4}, macs=0.5) == pytest.approx(10.0 * (0.6 + deviation_a + deviation_b))
    assert table.predict({}, macs=1.0) == 10.0
    assert table.predict({"b": 6}, macs=0.85) == pytest.approx(12.0)  # a timed entry is predicted as timed
    # Without the plan's MACs, the one-group MACs changes are added up: 1 - 0.3 - 0.3 = 0.4, on the curve's first
    # segment extended: 0.6 - 0.1 * 0.8 = 0.52.
    assert table.predict({"a": 2, "b": 4}) == pytest.approx(10.0 * (0.52 + deviation_a + deviation_b))
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.predict({"a": 2, "b": 4}, macs=0.5) == table.predict({"a": 2, "b": 4}, macs=0.5)


def test_round_to_auto_keeps_only_the_counts_on_the_tables_staircase():
    steps = _table().steps()
    assert steps == {"a": (2, 4), "b": (2, 4, 8)}  # 6 channels of b are slower than 8: never kept
    space = SearchSpace(spec=SpaceSpec(ratio="per_group"), groups=("a", "b"), ratio=(0.0, 0.9), criteria=("l1",), steps=steps)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(40):
        plan = space.sample(study.ask())
        kept = {g: kept_channels(w, plan.groups[g].ratio) for g, w in (("a", 4), ("b", 8))}
        assert kept["a"] in steps["a"] and kept["b"] in steps["b"]
        seen.add(kept["b"])
    assert seen == {2, 4, 8}
    # The budget's projection snaps too, and still meets its target: b's kept counts grow by the step.
    rng = random.Random(0)
    scores = {"a": [rng.random() for _ in range(4)], "b": [rng.random() for _ in range(8)]}
    for target in (0.4, 0.5, 0.7, 0.9):
        plan = ranked_plan(scores, "l1", macs=target, macs_of=lambda p: _fraction_kept(p), steps=steps, bounds=(0.0, 0.9))
        kept = {g: kept_channels(w, plan.groups[g].ratio) for g, w in (("a", 4), ("b", 8))}
        assert kept["b"] in steps["b"] and _fraction_kept(plan) <= target


def _fraction_kept(plan) -> float:
    return sum(kept_channels(w, plan.groups[g].ratio) for g, w in (("a", 4), ("b", 8))) / 12


def test_the_fitted_prediction_follows_the_calibration_plans():
    """Calibration plans whose latency is exactly MACs ** 0.9: the fit finds it, without the deviation term."""
    import dataclasses

    table = _table()
    plans = [({"a": a, "b": b}, m, m**0.9) for a, b, m in ((2, 2, 0.35), (2, 4, 0.45), (4, 2, 0.6), (2, 8, 0.7), (4, 4, 0.72))]
    fitted = dataclasses.replace(table, calibration=tuple(plans))
    c, a, b = fitted.fit()
    assert c == pytest.approx(0.0, abs=1e-6) and a == pytest.approx(0.9) and b == 0.0
    assert fitted.predict({"a": 2, "b": 6}, macs=0.5) == pytest.approx(10.0 * 0.5**0.9)
    assert LatencyTable.from_dict(json.loads(json.dumps(fitted.to_dict()))).fit() == fitted.fit()


def test_no_step_of_the_staircase_runs_slower_than_a_larger_one():
    table = _table()
    for group, steps in table.steps().items():
        timed = dict(table.curve(group))
        for small, large in zip(steps, steps[1:], strict=False):
            assert timed[small] <= timed[large]


@pytest.mark.parametrize("name", ["resnet18_like", "mobilenet_v2_like", "vit_ti16"])
def test_the_224_stand_ins_prune_at_224(name):
    import torch

    from autoprune.engine import apply_plan, find_groups
    from autoprune.models import build_model

    model = build_model(name, in_channels=3, num_classes=1000).eval()
    example = torch.zeros(1, 3, 224, 224)
    groups = find_groups(model, example)
    pruned, report = apply_plan(model, example, PruningPlan.uniform(groups, 0.5, "l1"))
    assert len(groups) > 10 and report.macs_ratio < 0.5
    with torch.no_grad():
        assert pruned(example).shape == (1, 1000)
