"""The staged search: screen, fine-tune the best of each band, promote; at exactly its budget, with screened trials
kept off the front, the report and the export, resumable, and its finalists re-created exactly by export."""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest
import torch
from conftest import tiny_config
from optuna.trial import TrialState
from torch.optim.optimizer import register_optimizer_step_post_hook

import autoprune
from autoprune.config import config_from_dict
from autoprune.errors import ConfigError
from autoprune.export import Selection, export_model, select_trial
from autoprune.report import ConstraintsView, collect
from autoprune.report._hypervolume import hypervolume
from autoprune.study import (
    SearchInterrupted,
    UnitCosts,
    front_trials,
    is_final,
    pareto_optimal,
    pareto_frame,
    plan_schedule,
    staged_spend,
    trials_frame,
)

BUDGET = 80  # screens cost 2 + 2 = 4, a 3-step finalist 3 + 2 + 2 * 2 = 9, a 6-step one 12 (see _config)
SCREENS, FINALISTS = 12, (2, 1)  # finalists may take 40: 2 x 9 + 1 x 12 = 30; the other 50 screen 12 plans; 2 left


def _config(tmp_path, base_weights, **study: Any) -> dict[str, Any]:
    stages = {
        "budget": BUDGET,
        "screen": {"share": 0.5},
        "bands": {"count": 3, "low": 0.05},
        "promote": {"rungs": 2, "factor": 2},
    }
    return tiny_config(
        tmp_path / "run",
        base_weights,
        finetune={"epochs": 1, "steps": 3, "lr": 0.01, "bn_recalibration_batches": 2, "val_batches": 2},
        study={"sampler": "tpe", "n_trials": 4, "seed": 0, "search": "staged", "stages": stages, **study},
        export={"epochs": 0, "onnx_exporter": "off"}, latency={"runs": 2, "warmup": 0},
    )


class Counter:
    """Every optimizer step, and every forward of a whole model on a data batch (batch > 1: the graph tracing and
    MAC counting run the example input, of batch 1), while the search runs trials."""

    def __init__(self) -> None:
        self.steps = 0
        self.forwards = 0
        self.handles: list[Any] = []

    def start(self, _study: optuna.Study, _task: Any) -> None:
        if not self.handles:  # from on_ready: the base model was scored before this
            self.handles = [
                register_optimizer_step_post_hook(self._step),
                torch.nn.modules.module.register_module_forward_hook(self._forward),
            ]

    def _step(self, *_: Any) -> None:
        self.steps += 1

    def _forward(self, module: torch.nn.Module, inputs: tuple[Any, ...], _output: Any) -> None:
        if type(module).__name__ == "ResNet" and inputs and inputs[0].shape[0] > 1:
            self.forwards += 1

    def stop(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


@pytest.fixture(scope="module")
def staged(tmp_path_factory, base_weights):
    """One staged study, interrupted after its first finalist and resumed; with the work counted over both runs."""
    tmp_path = tmp_path_factory.mktemp("staged")
    config = config_from_dict(_config(tmp_path, base_weights))
    counter = Counter()

    def interrupt(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_final(trial):
            raise KeyboardInterrupt

    try:
        with pytest.raises(SearchInterrupted):
            autoprune.search(config, callbacks=[interrupt], on_ready=counter.start)
        counter.stop()  # the resumed run scores the base model again before its trials
        first = [(t.number, t.state, t.user_attrs.get("fidelity")) for t in _study(config).trials]
        study = autoprune.search(config, on_ready=counter.start)
    finally:
        counter.stop()
    return config, study, counter, first


def _study(config):
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url)


def _rung(trial) -> int | None:
    return trial.user_attrs.get("stage", {}).get("rung")


def test_the_staged_search_spends_exactly_its_budget(staged):
    config, study, counter, _ = staged
    complete = study.get_trials(states=[TrialState.COMPLETE])
    assert not [t for t in study.trials if t.state == TrialState.FAIL]
    spent = staged_spend(study)
    # What the trials record is what ran: every optimizer step and every data batch through a candidate.
    assert (spent.train_steps, spent.forward_batches) == (counter.steps, counter.forwards - counter.steps)
    assert spent.train_steps == 2 * 3 + 1 * 6
    screen_cost = 2 + 2
    # Exactly: never above the budget, and less than one screen (the smallest unit of work) left over.
    assert spent.total <= BUDGET and BUDGET - spent.total < screen_cost
    assert sum(not is_final(t) for t in complete) == SCREENS
    assert [sum(_rung(t) == r for t in complete) for r in (0, 1)] == list(FINALISTS)
    assert study.user_attrs["stages"]["screens"] == SCREENS and study.user_attrs["stages"]["budget"] == BUDGET
    assert len(complete) == len(study.trials)  # nothing failed, nothing left waiting


@pytest.mark.parametrize("budget", [61, 80, 81, 150, 333, 1000, 5000])
def test_a_schedule_leaves_less_than_one_screen_of_its_budget(tmp_path, budget):
    config = config_from_dict(_config(tmp_path, None, stages={"budget": budget, "promote": {"rungs": 3, "factor": 3}}))
    costs = UnitCosts(recalibration=2, validation=2, finetune_steps=3)
    schedule = plan_schedule(budget, costs, config.study.stages, config)
    counts = [r.finalists for r in schedule.rungs]
    assert counts == [counts[0], math.ceil(counts[0] / 3), math.ceil(math.ceil(counts[0] / 3) / 3)]
    assert [r.steps for r in schedule.rungs] == [3, 9, 27]
    assert schedule.screens >= counts[0] >= 1
    assert 0 <= budget - schedule.planned.total < costs.screen().total


def test_screened_trials_never_reach_the_front_the_hypervolume_or_the_export(staged):
    config, study, _, _ = staged
    screened = [t for t in study.get_trials(states=[TrialState.COMPLETE]) if not is_final(t)]
    finals = [t for t in study.get_trials(states=[TrialState.COMPLETE]) if is_final(t)]
    # Screens carry no stored constraint (the sampler learns from their scores); the dashboard's view greys them.
    assert all(t.user_attrs["fidelity"] == "screen" and not t.constraints for t in screened)
    view = ConstraintsView(study._storage)
    assert all(view.get_trial(t._trial_id).system_attrs["constraints"] == [1.0] for t in screened)
    assert all("constraints" not in view.get_trial(t._trial_id).system_attrs for t in finals)
    numbers = {t.number for t in screened}
    front = front_trials(study)
    assert {t.number for t in front} == {t.number for t in pareto_optimal(finals)}
    assert not numbers & {int(n) for n in pareto_frame(study)["trial"].iloc[1:]}
    data = collect(study)
    assert set(data.scored["number"]) == {t.number for t in finals}
    assert data.hypervolume() == pytest.approx(hypervolume([t.values for t in finals]))
    frame = trials_frame(study)
    assert set(frame.loc[frame["number"].isin(numbers), "fidelity"]) == {"screen"}
    for rule, value in (("knee", None), ("max_macs", 1.0), ("min_metric", 0.0)):
        assert is_final(select_trial(study, Selection(rule, value), study.user_attrs["base"]["metric"]))
    with pytest.raises(ConfigError, match="only screened") as error:
        select_trial(study, Selection("trial", screened[0].number))
    assert error.value.key == "--trial"


def test_promoted_finalists_record_the_longer_finetune(staged):
    _, study, _, _ = staged
    by_number = {t.number: t for t in study.trials}
    rung0 = [t for t in study.trials if _rung(t) == 0]
    (promoted,) = [t for t in study.trials if _rung(t) == 1]
    assert all(t.user_attrs["finetune"] == {"epochs": 1, "steps": 3} for t in rung0)
    assert promoted.user_attrs["finetune"] == {"epochs": 0, "steps": 6}
    assert promoted.user_attrs["stage"]["train_steps"] == 6
    source = by_number[promoted.user_attrs["stage"]["source"]]
    assert _rung(source) == 0 and source.user_attrs["plan"] == promoted.user_attrs["plan"]
    assert promoted.params == source.params
    # The promoted plan is the best fine-tuned one of its band, and rung 0 re-ran screened plans.
    for finalist in rung0:
        screen = by_number[finalist.user_attrs["stage"]["source"]]
        assert screen.user_attrs["fidelity"] == "screen" and screen.user_attrs["plan"] == finalist.user_attrs["plan"]


def test_a_promoted_finalist_recreated_by_export_scores_exactly_as_in_the_search(staged, tmp_path):
    config, study, _, _ = staged
    (promoted,) = [t for t in study.trials if _rung(t) == 1]
    result = export_model(config, Selection("trial", promoted.number), tmp_path / "export")
    record = json.loads((tmp_path / "export" / "export.json").read_text())
    assert record["trial"] == promoted.number
    assert result.record["metric"]["recreated_validation"] == promoted.values[0]


def test_resume_continues_without_redoing_stages(staged):
    config, study, _, first = staged
    first_screens = [
        number for number, state, fidelity in first if fidelity == "screen" and state == TrialState.COMPLETE
    ]
    assert len(first_screens) == SCREENS  # the first run screened everything, then was interrupted
    assert sum(fidelity == "finetune" for _, state, fidelity in first if state == TrialState.COMPLETE) == 1
    after = {t.number: t for t in study.trials}
    # The resumed run screened nothing more and re-ran no finalist: every trial of the first run is kept as it was.
    assert [t.number for t in study.trials if not is_final(t)] == first_screens
    assert all(after[number].state == state for number, state, _ in first)
    slots = [(_rung(t), json.dumps(t.user_attrs["plan"], sort_keys=True)) for t in study.trials if is_final(t)]
    assert len(slots) == len(set(slots)) == sum(FINALISTS)


def test_a_staged_study_is_not_resumed_as_a_single_search(staged):
    config, _, _, _ = staged
    single = config.model_dump(mode="json")
    single["study"] = {**single["study"], "search": "single"}
    single["study"].pop("stages")
    resolved = config.output / "config.resolved.yaml"
    written = resolved.read_bytes()
    with pytest.raises(ConfigError, match="was started with another search: staged -> single") as error:
        autoprune.search(config_from_dict(single))
    assert error.value.key == "study.search"
    assert resolved.read_bytes() == written  # refused before anything is written


@pytest.mark.parametrize(
    ("study", "key"),
    [
        ({"stages": {"bands": {"count": 0}}}, "study.stages.bands.count"),
        ({"stages": {"promote": {"fator": 2}}}, "study.stages.promote.fator"),
        ({"stages": {"screen": {"share": 1.0}}}, "study.stages.screen.share"),
        ({"stages": {"budget": 0}}, "study.stages.budget"),
        ({"search": "stagd"}, "study.search"),
        ({"search": "single", "stages": {"budget": 100}}, "study.stages"),
    ],
)
def test_a_bad_stage_config_is_one_line_naming_the_key(tmp_path, study, key):
    with pytest.raises(ConfigError) as error:
        config_from_dict(_config(tmp_path, None, **study))
    assert error.value.key == key and "\n" not in str(error.value)


def test_a_budget_too_small_for_one_screen_and_one_finalist_per_rung_names_the_key(tmp_path):
    config = config_from_dict(_config(tmp_path, None, stages={"budget": 27}))
    with pytest.raises(ConfigError, match="at least 28") as error:
        plan_schedule(27, UnitCosts(2, 2, 3), config.study.stages, config)
    assert error.value.key == "study.stages.budget"


def test_a_screen_that_dominates_a_finalist_does_not_hide_it_from_the_front():
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values, fidelity in (([0.9, 0.2], "screen"), ([0.8, 0.3], "finetune"), ([0.7, 0.5], "finetune")):
        study.add_trial(optuna.trial.create_trial(values=values, user_attrs={"fidelity": fidelity}))
    assert [t.number for t in study.best_trials] == [0]  # Optuna's own front would show the screen alone
    assert [t.number for t in front_trials(study)] == [1]
