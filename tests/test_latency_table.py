"""The latency table: built once per settings and architecture, cached in the run folder and shared by searches
and workers, rebuilt when the backend or batch changes, resumed after an interruption; the prediction it makes;
the staircase ``prune.round_to: auto`` keeps; ``latency.mode: both``.

A user backend that returns each model's parameter count as its "seconds" makes every figure exact, and writes a
line per call to the file ``$TABLE_CALLS`` names, so tests count timings across processes. No test asserts a
timing."""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import uuid

import optuna
import pytest
from conftest import run_cli, tiny_config, write_config

import autoprune
from autoprune.cli import main
from autoprune.config import SpaceSpec, config_from_dict, load_config
from autoprune.errors import ConfigError
from autoprune.evaluate import MAX_AUTO_NOISE, LatencyTable
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


_BASE = []


def noisy_base(model, example_inputs):
    """by_params, but the first model timed (the base) is alternately as fast and 1.5 times slower: a busy board."""
    params = sum(p.numel() for p in model.parameters())
    if not _BASE or params == _BASE[0]:
        _BASE.append(params)
        return params * 1e-9 * (1.5 if len(_BASE) % 2 else 1.0)
    return params * 1e-9
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
    table = _table()
    plans = [({"a": a, "b": b}, m, m**0.9) for a, b, m in ((2, 2, 0.35), (2, 4, 0.45), (4, 2, 0.6), (2, 8, 0.7), (4, 4, 0.72))]
    fitted = dataclasses.replace(table, calibration=tuple(plans))
    c, a, b = fitted.fit()
    assert c == pytest.approx(0.0, abs=1e-6) and a == pytest.approx(0.9) and b == 0.0
    assert fitted.predict({"a": 2, "b": 6}, macs=0.5) == pytest.approx(10.0 * 0.5**0.9)
    assert LatencyTable.from_dict(json.loads(json.dumps(fitted.to_dict()))).fit() == fitted.fit()


@pytest.mark.parametrize("noise", [0.0, 0.2])
def test_no_step_of_the_staircase_runs_slower_than_a_larger_one_beyond_the_noise(noise):
    table = dataclasses.replace(_noisy_table(), noise=noise)
    for group, steps in table.steps().items():
        timed = dict(table.curve(group))
        for small, large in zip(steps, steps[1:], strict=False):
            assert timed[small] <= timed[large] * (1 + noise)


def _noisy_table() -> LatencyTable:
    """Group b (8 channels): 6 channels run fastest (0.75); 4 are 12% slower than that, 2 are 27% slower."""
    entries = {"a": {2: (0.6, 0.7), 4: (1.0, 1.0)}, "b": {2: (0.95, 0.5), 4: (0.84, 0.6), 6: (0.75, 0.8), 8: (1.0, 1.0)}}
    return LatencyTable({"groups": {"a": 4, "b": 8}}, 10.0, entries, noise=0.2)


def test_round_to_auto_keeps_a_count_that_a_larger_one_beats_only_within_the_tables_noise():
    table = _noisy_table()
    # 20% noise: 4 channels (12% slower than 6) may be a jitter and stay; 2 (27% slower) are beaten beyond it.
    assert table.steps()["b"] == (4, 6, 8)
    assert dataclasses.replace(table, noise=0.0).steps()["b"] == (6, 8)  # a quiet table drops both
    assert dataclasses.replace(table, noise=0.3).steps()["b"] == (2, 4, 6, 8)
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))  # the noise is kept in the file
    assert again.noise == 0.2 and again.steps() == table.steps()


def test_round_to_auto_refuses_a_table_noisier_than_it_trusts_and_round_to_1_uses_it(tmp_path, base_weights, backend, capsys):
    module, calls = backend
    raw = _raw(tmp_path, base_weights, module, fn="noisy_base")
    path = write_config(tmp_path / "config.yaml", raw)
    assert main(["profile", str(path)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "Traceback" not in err
    assert "prune.round_to" in errors[0] and "noise" in errors[0] and "prune.round_to: 1" in errors[0]
    config = load_config(path)
    (table_file,) = _tables(config)  # built, whole, and kept
    table = LatencyTable.from_dict(json.loads(table_file.read_text()))
    assert table.noise > MAX_AUTO_NOISE and f"{table.noise:.0%} noise" in errors[0]
    with pytest.raises(ConfigError, match="round_to auto trusts") as refused:
        autoprune.search(config)
    assert refused.value.key == "prune.round_to"
    assert not (config.output / "trials.csv").exists()
    built = _calls(calls)
    raw["prune"]["round_to"] = 1
    assert main(["profile", str(write_config(path, raw))]) == 0
    assert _calls(calls) == built  # the kept table served it, untimed


def _profiled(tmp_path, base_weights, module):
    path = write_config(tmp_path / "config.yaml", _raw(tmp_path, base_weights, module))
    assert main(["profile", str(path)]) == 0
    return path, load_config(path)


def _listing(folder) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "corrupt, named",
    [
        (lambda data: data["entries"][0].__setitem__(2, -0.5), "-0.5"),  # an edited figure: every trial ~free
        (lambda data: data["entries"][0].__setitem__(3, float("nan")), "nan"),
        (lambda data: data.__setitem__("base_ms", 0.0), "base_ms"),
    ],
)
def test_a_table_with_an_impossible_figure_is_one_line_naming_the_file_to_delete(
    tmp_path, base_weights, backend, capsys, corrupt, named
):
    module, _ = backend
    path, config = _profiled(tmp_path, base_weights, module)
    (table_file,) = _tables(config)
    data = json.loads(table_file.read_text())
    corrupt(data)
    table_file.write_text(json.dumps(data))
    before = _listing(config.output)
    capsys.readouterr()
    for command in ("profile", "search"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert str(table_file) in errors[0] and "autoprune profile" in errors[0] and named in errors[0]
        assert "cost" not in errors[0]  # the table is at fault, not the objective
        assert _listing(config.output) == before  # nothing written, the table left for the user to delete


def test_a_file_where_the_tables_go_is_one_line_from_profile_and_search(tmp_path, base_weights, backend, capsys):
    module, calls = backend
    path = write_config(tmp_path / "config.yaml", _raw(tmp_path, base_weights, module))
    output = tmp_path / "run"
    output.mkdir()
    (output / TABLE_FOLDER).write_text("not a folder")
    before = _listing(output)
    for command in ("profile", "search"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err
        errors = [line for line in err.splitlines() if "error" in line]
        assert len(errors) == 1 and "Traceback" not in err, err
        assert str(output / TABLE_FOLDER) in errors[0] and "not a folder" in errors[0]
        assert _listing(output) == before and _calls(calls) == 0


def test_a_search_that_builds_its_table_draws_the_same_bar_as_profile(tmp_path, base_weights, backend):
    from rich.console import Console

    from autoprune.cli._progress import SearchProgress

    module, _ = backend
    raw = _raw(tmp_path, base_weights, module, mode="predicted")
    raw["study"] = {**raw["study"], "n_trials": 1}
    config = config_from_dict(raw)
    screen = io.StringIO()
    with SearchProgress(config, Console(file=screen, force_terminal=True, width=160)) as progress:
        autoprune.search(config, log=progress.log, callbacks=[progress.on_trial], on_ready=progress.on_ready)
    shown = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.getvalue())
    table = LatencyTable.from_dict(json.loads(_tables(config)[0].read_text()))
    # What the build timed: each group's counts below its width, the uniform plans, the calibration plans.
    total = sum(len(c) - 1 for c in table.entries.values()) + len(table.uniform) + len(table.calibration)
    bars = re.findall(r"latency table .*?(\d+)/(\d+)", shown)
    assert len(bars) > 1 and bars[-1] == (str(total), str(total))
    assert re.search(r"trials .*?1/1", shown)


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
