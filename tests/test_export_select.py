"""Selection rules and refusals on a real (in-memory) Optuna study: no training needed."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from autoprune import ConfigError, PruningPlan
from autoprune.export import Selection, chord_heights, select_trial
from autoprune.export._recover import step_fractions, step_plan
from autoprune.plan import kept_channels

PLAN = PruningPlan({"conv1": (0.5, "l1")}).to_dict()


def _trial(metric, macs, state=TrialState.COMPLETE, feasible=True):
    values = [metric, macs] if state == TrialState.COMPLETE else None
    attrs = {"plan": PLAN, "macs_relative": macs, "feasible": feasible}
    constraint = 0.1 if not feasible else -0.1
    return optuna.trial.create_trial(
        state=state, values=values, user_attrs=attrs, system_attrs={"constraints": [constraint]}
    )


@pytest.fixture(scope="module")
def study():
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="s")
    for args in [
        (0.98, 0.80),  # 0
        (0.97, 0.45),  # 1: best under 0.5
        (0.95, 0.30),  # 2: the knee
        (0.60, 0.10),  # 3: cheapest
        (0.99, 0.20, TrialState.COMPLETE, False),  # 4: infeasible, would beat everything
        (0.0, 0.0, TrialState.FAIL),  # 5
        (0.0, 0.0, TrialState.PRUNED),  # 6
        (0.96, 0.45),  # 7: same cost as 1, worse metric
    ]:
        study.add_trial(_trial(*args))
    return study


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        (Selection("trial", 2), 2),
        (Selection("max_macs", 0.5), 1),
        (Selection("max_macs", 0.3), 2),
        (Selection("max_macs", 1.0), 0),
        (Selection("max_cost", 0.5), 1),
        (Selection("max_cost", 0.15), 3),
        (Selection("min_metric", 0.97), 1),
        (Selection("min_metric", 0.9), 2),
        (Selection("min_metric", 0.5), 3),
        (Selection("knee"), 2),
    ],
)
def test_each_selection_rule_picks_the_expected_trial(study, selection, expected):
    assert select_trial(study, selection, base_metric=0.985).number == expected


@pytest.mark.parametrize(
    ("number", "why"),
    [(4, "infeasible"), (5, "state is FAIL"), (6, "state is PRUNED"), (42, "no such trial")],
)
def test_a_trial_that_cannot_be_exported_is_refused_with_the_nearest_valid_choices(study, number, why):
    with pytest.raises(ConfigError) as err:
        select_trial(study, Selection("trial", number))
    message = str(err.value)
    assert err.value.key == "--trial" and why in message and "\n" not in message
    nearest = message.split("nearest valid trials:")[1]
    assert "#3" in nearest and "#4 " not in nearest and "#5 " not in nearest  # only valid trials are offered


def test_an_unmet_budget_or_floor_lists_the_cheapest_or_best_valid_trials(study):
    with pytest.raises(ConfigError, match=r"MACs <= 0.05.*cheapest valid trials: #3 \(") as err:
        select_trial(study, Selection("max_macs", 0.05))
    assert err.value.key == "--max-macs"
    with pytest.raises(ConfigError, match=r"metric >= 0.999.*best valid trials: #0 \(") as err:
        select_trial(study, Selection("min_metric", 0.999))
    assert err.value.key == "--min-metric"
    with pytest.raises(ConfigError, match=r"cost <= 0.05.*cheapest valid trials: #3 \(metric 0.6000, cost 0.100\)") as err:
        select_trial(study, Selection("max_cost", 0.05))
    assert err.value.key == "--max-cost"


def test_cost_rules_follow_the_study_objective_not_macs():
    # An unstructured study: every trial keeps all MACs; the cost is the share of non-zero params.
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="sparse")
    for metric, cost in [(0.99, 0.5), (0.98, 0.2), (0.90, 0.05)]:
        trial = _trial(metric, 1.0)
        study.add_trial(optuna.trial.create_trial(state=trial.state, values=[metric, cost], user_attrs=trial.user_attrs, system_attrs=trial.system_attrs))
    assert select_trial(study, Selection("max_cost", 0.25)).number == 1
    assert select_trial(study, Selection("min_metric", 0.95)).number == 1
    with pytest.raises(ConfigError, match="MACs <= 0.5"):
        select_trial(study, Selection("max_macs", 0.5))


def test_a_study_without_valid_trials_has_nothing_to_export():
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="empty")
    study.add_trial(_trial(0.9, 0.3, feasible=False))
    for selection in (Selection("knee"), Selection("max_macs", 0.9), Selection("min_metric", 0.1)):
        with pytest.raises(ConfigError, match="no COMPLETE, feasible trial"):
            select_trial(study, selection)


def test_the_knee_is_the_point_farthest_above_the_chord():
    # (cost, metric): a sharp knee at index 2 whatever the units of the axes
    points = [(1.0, 0.99), (0.6, 0.985), (0.3, 0.98), (0.2, 0.7), (0.1, 0.3)]
    heights = chord_heights(points)
    assert max(range(len(points)), key=heights.__getitem__) == 2
    assert heights[0] == pytest.approx(0.0) and heights[-1] == pytest.approx(0.0)


@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_gradual_steps_land_exactly_on_the_plan(steps):
    plan = PruningPlan({"a": (0.7, "l1"), "b": (0.0, "l2"), "c": (0.33, "fpgm")}, round_to=2)
    base = {"a": 64, "b": 32, "c": 10}
    current = dict(base)
    fractions = step_fractions(steps)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    for fraction in fractions:
        step = step_plan(plan, fraction, base, current)
        current = {n: kept_channels(current[n], step.groups[n].ratio, plan.round_to) for n in current}
        assert step.groups["c"].criterion == "fpgm"
    assert current == {n: kept_channels(base[n], plan.groups[n].ratio, 2) for n in base}


def test_export_config_keys_are_typed_and_unknown_keys_are_errors(tmp_path):
    from autoprune.config import config_from_dict
    from conftest import tiny_config

    config = config_from_dict(tiny_config(tmp_path, export={"schedule": {"steps": 3}, "onnx_exporter": "off"}))
    assert config.export.schedule.steps == 3 and config.export.schedule.kind == "linear" and config.export.epochs == 10
    with pytest.raises(ConfigError, match=r"did you mean 'epochs'") as err:
        config_from_dict(tiny_config(tmp_path, export={"epoch": 3}))
    assert err.value.key == "export.epoch"
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(tmp_path, export={"schedule": {"steps": 0}}))
    assert err.value.key == "export.schedule.steps"
    with pytest.raises(ConfigError, match=r"export.iterative_steps is now export.schedule.steps"):
        config_from_dict(tiny_config(tmp_path, export={"iterative_steps": 3}))
    with pytest.raises(ConfigError, match=r"unknown schedule 'cubic'.*known: linear, polynomial") as err:
        config_from_dict(tiny_config(tmp_path, export={"schedule": {"kind": "cubic"}}))
    assert err.value.key == "export.schedule.kind"
