"""The budget-targeted search: every candidate projected onto its budget, the hand-picked baselines screened first
and the best of them fine-tuned, an exact spend per budget, promotion inside a budget, the screen's fidelity, and
the same decisions when resumed or run by two workers."""

from __future__ import annotations

import json
import math
from typing import Any

import optuna
import pytest
import torch
from conftest import tiny_config
from optuna.trial import TrialState

import autoprune
from autoprune.config import SpaceSpec, config_from_dict
from autoprune.engine import apply_plan, count_macs_params, find_groups, importance_table
from autoprune.errors import ConfigError
from autoprune.export import Selection, select_trial
from autoprune.models import build_model
from autoprune.plan import PruningPlan
from autoprune.report import collect
from autoprune.space import ALLOCATION_OPTIMIZERS, SearchSpace, baseline_params, tied_knob
from autoprune.study import (
    SLOT_ATTR,
    SearchInterrupted,
    budget_summaries,
    budget_winner,
    is_final,
    kendall_tau,
    spearman_rho,
    trials_frame,
)
from autoprune.study._budget import UnitCosts, budget_schedule

BUDGETS = (0.5, 0.1)
# Unit costs of _config: a screen 2 + 2 = 4 batches, a 3-step finalist 3 + 2 + 2 * 2 = 9, a 6-step one 12. Each
# budget gets 64 batches: finalists 2 x 9 + 1 x 12 = 30 (half of 64 at most), 8 screens (5 baselines, then
# rounds of 2 and 1) take 32, and 2 are left over.
TOTAL, SCREENS, FINALISTS = 128, 8, (2, 1)


def _config(tmp_path, base_weights, **study: Any) -> dict[str, Any]:
    stages = {"budget": TOTAL, "screen": {"share": 0.5}, "promote": {"rungs": 2, "factor": 2}}
    settings = {"n_trials": 4, "seed": 0, "search": "budgeted", "budgets": list(BUDGETS), "stages": stages,
                "allocation": {"optimizer": "tpe", "round_size": 2}, **study}  # fmt: skip
    return tiny_config(
        tmp_path / "run",
        base_weights,
        prune={"ignore": ["fc"], "search_space": "per_stage", "ratio": [0.0, 0.95], "criteria": ["l1", "l2", "fpgm"]},
        finetune={"epochs": 1, "steps": 3, "lr": 0.01, "bn_recalibration_batches": 2, "val_batches": 2},
        study=settings,
    )


def _study(config) -> optuna.Study:
    return optuna.load_study(study_name=config.study_name, storage=config.storage_url)


def _decisions(study: optuna.Study) -> dict[str, Any]:
    """What the search decided, independent of trial numbers: each screen slot's params, each finalist's plan."""
    decided: dict[str, Any] = {}
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        slot = trial.user_attrs[SLOT_ATTR]
        if slot["kind"] == "screen":
            decided[f"b{slot['budget']} screen {slot['index']}"] = (trial.params, round(trial.values[0], 6))
        else:
            key = f"b{slot['budget']} rung {slot['rung']} {json.dumps(trial.user_attrs['plan'], sort_keys=True)}"
            decided[key] = round(trial.values[0], 6)
    return decided


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, base_weights):
    """A budgeted study interrupted after its first finalist and resumed."""
    config = config_from_dict(_config(tmp_path_factory.mktemp("resumed"), base_weights))

    def interrupt(_study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if is_final(trial):
            raise KeyboardInterrupt

    with pytest.raises(SearchInterrupted):
        autoprune.search(config, callbacks=[interrupt])
    first = {t.number: (t.state, t.params) for t in _study(config).trials}
    return config, autoprune.search(config), first


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, base_weights):
    config = config_from_dict(_config(tmp_path_factory.mktemp("one"), base_weights))
    return config, autoprune.search(config)


# -- the projection --------------------------------------------------------------------------------------------


def _space_on(name: str, spec: SpaceSpec, criteria: tuple[str, ...], budgets: tuple[float, ...]):
    """A budgeted space over a zoo model's groups (random weights) and what measures a plan's relative MACs."""
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=10).eval()
    inputs = torch.randn(1, 1, 16, 16)
    groups = find_groups(model, inputs, [])
    counts = count_macs_params(model, inputs)

    def cost_of(plan: PruningPlan) -> float:
        return apply_plan(model, inputs, plan, base_counts=counts)[1].macs_ratio

    importances = importance_table(model, inputs, groups, list(criteria), ["layer"])
    space = SearchSpace(spec=spec, groups=tuple(g.name for g in groups), ratio=(0.0, 0.95), criteria=criteria,
                        importances=importances, budgets=budgets, cost_of=cost_of)  # fmt: skip
    return space, cost_of


@pytest.mark.parametrize("name", ["resnet_small", "mobilenet_small", "vit_tiny"])
def test_a_projected_plan_lands_on_its_budget_within_one_channel_step(name):
    space, cost_of = _space_on(name, SpaceSpec(ratio="per_stage", criterion="shared"), ("l1", "l2"), (0.25, 0.05))
    channels = space.channels()
    for budget in space.budgets:
        uniform, ranked = baseline_params(space, budget)[0], baseline_params(space, budget)[-1]
        scaled = {**ranked, **{k: (0.6 if i % 2 else 1.8) for i, k in enumerate(ranked) if k.startswith("scale")}}
        for params in (uniform, ranked, scaled):
            plan = space.plan_from_params(params)
            cost = cost_of(plan)
            assert cost <= budget
            # One more channel kept anywhere costs at least what the plan falls short of the budget by.
            steps = []
            for group, entry in plan.groups.items():
                kept = round(channels[group] * (1 - entry.ratio))
                if kept < channels[group]:
                    wider = {g: (e.ratio, e.criterion) for g, e in plan.groups.items()}
                    wider[group] = (1 - (kept + 1) / channels[group], entry.criterion)
                    steps.append(cost_of(PruningPlan(wider)) - cost)
            assert budget - cost <= max(steps) + 1e-12
            if max(steps) <= 0.01 * budget:  # where the channel granularity allows: within 1% of the budget
                assert budget - cost <= 0.01 * budget


def test_an_unreachable_budget_is_one_line_naming_it():
    model = build_model("resnet_small", in_channels=1, num_classes=10).eval()
    inputs = torch.randn(1, 1, 16, 16)
    groups = find_groups(model, inputs, ["fc"])
    counts = count_macs_params(model, inputs)
    with pytest.raises(ConfigError, match="budget 0.01 cannot be reached") as error:
        SearchSpace(
            spec=SpaceSpec(),
            groups=tuple(g.name for g in groups),
            ratio=(0.0, 0.5),
            criteria=("l1",),
            importances=importance_table(model, inputs, groups, ["l1"], ["layer"]),
            budgets=(0.5, 0.01),
            cost_of=lambda plan: apply_plan(model, inputs, plan, base_counts=counts)[1].macs_ratio,
        )
    assert error.value.key == "study.budgets" and "\n" not in str(error.value)


# -- the schedule ----------------------------------------------------------------------------------------------


def test_a_budget_too_small_for_promotion_drops_a_rung_before_it_refuses(tmp_path):
    config = config_from_dict(_config(tmp_path, None))
    costs = UnitCosts(recalibration=2, validation=2, finetune_steps=3)
    full = budget_schedule(0.5, 64, costs, config.study.stages, config, baselines=5)
    assert full is not None and [r.finalists for r in full.rungs] == list(FINALISTS) and full.screens == SCREENS
    small = budget_schedule(0.5, 40, costs, config.study.stages, config, baselines=5)
    assert small is not None and len(small.rungs) == 1 and small.screens >= 5
    assert budget_schedule(0.5, 20, costs, config.study.stages, config, baselines=5) is None


def test_a_compute_in_batches_too_small_for_one_budget_is_refused_naming_the_key_and_the_least(tmp_path, base_weights):
    # A screen costs 4 batches here and a fine-tune 9: 10 cannot pay even global-l2 and uniform-l2 and a finalist.
    config = config_from_dict(_config(tmp_path, base_weights, stages={"budget": 10}))
    with pytest.raises(ConfigError, match=r"the whole search needs study.stages.budget \d+") as error:
        autoprune.search(config)
    assert error.value.key == "study.stages.budget" and "\n" not in str(error.value)
    assert not config.output.exists()  # refused before anything is written


@pytest.mark.parametrize(
    ("study", "key"),
    [
        ({"budgets": [0.5, 0.5]}, "study.budgets"),
        ({"budgets": [1.5]}, "study.budgets[0]"),
        ({"budget_weights": [1.0]}, "study.budget_weights"),
        ({"search": "single", "budgets": [0.3], "stages": {}, "allocation": {}}, "study.budgets"),
        ({"allocation": {"round_size": 0}}, "study.allocation.round_size"),
        ({"stages": {"bands": {"count": 3}}}, "study.stages"),
    ],
)
def test_a_bad_budget_config_is_one_line_naming_the_key(tmp_path, study, key):
    with pytest.raises(ConfigError) as error:
        config_from_dict(_config(tmp_path, None, **study))
    assert error.value.key == key and "\n" not in str(error.value)


def test_budget_weights_follow_their_budgets_when_sorted(tmp_path):
    config = config_from_dict(_config(tmp_path, None, budgets=[0.1, 0.5], budget_weights=[3.0, 1.0]))
    assert config.study.budgets == [0.5, 0.1] and config.study.weights == (0.25, 0.75)


def test_the_budgeted_search_is_the_default(tmp_path):
    raw = tiny_config(tmp_path / "run")
    raw["study"].pop("search")
    assert config_from_dict(raw).study.search == "budgeted"
    assert config_from_dict(raw).study.budgets == [0.5, 0.25, 0.1, 0.05]


# -- the search ------------------------------------------------------------------------------------------------


def _by_budget(study: optuna.Study, index: int, kind: str) -> list[optuna.trial.FrozenTrial]:
    return [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get(SLOT_ATTR, {}).get("budget") == index and t.user_attrs[SLOT_ATTR]["kind"] == kind
    ]


def test_every_candidate_is_built_at_its_budget(uninterrupted):
    _, study = uninterrupted
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert len(done) == len(BUDGETS) * (SCREENS + sum(FINALISTS))
    for trial in done:
        assert trial.values[1] <= trial.params["budget"]
        assert trial.values[1] >= 0.95 * trial.params["budget"]  # resnet_small's channel steps are below 5%


def test_the_baselines_are_screened_first_at_every_budget_and_the_best_is_finetuned(uninterrupted):
    _, study = uninterrupted
    for index, budget in enumerate(BUDGETS):
        screens = sorted(_by_budget(study, index, "screen"), key=lambda t: t.number)
        first = screens[:5]
        criteria = [{v for k, v in t.params.items() if k.startswith("criterion")} for t in first]
        assert all(len(c) == 1 for c in criteria)  # one criterion for every stage
        assert [(t.params["basis"], c.pop()) for t, c in zip(first, criteria, strict=True)] == [
            ("uniform", "l1"), ("uniform", "l2"), ("uniform", "fpgm"), ("ranked", "l1"), ("ranked", "l2"),
        ]  # fmt: skip
        assert all(t.user_attrs[SLOT_ATTR]["round"] == 0 for t in first)
        assert all(v == 1.0 for t in first for k, v in t.params.items() if k.startswith("scale"))
        assert all(t.user_attrs[SLOT_ATTR]["round"] > 0 for t in screens[5:])
        best = max(first, key=lambda t: (t.values[0], -t.user_attrs[SLOT_ATTR]["index"]))
        rung0 = [t for t in _by_budget(study, index, "finalist") if t.user_attrs[SLOT_ATTR]["rung"] == 0]
        assert best.number in {t.user_attrs["stage"]["source"] for t in rung0}
        assert all(t.params["budget"] == budget for t in screens + rung0)


def test_the_spend_of_every_budget_is_exact(uninterrupted):
    _, study = uninterrupted
    screen, finetunes = 4, {0: 9, 1: 12}
    for index in range(len(BUDGETS)):
        trials = _by_budget(study, index, "screen") + _by_budget(study, index, "finalist")
        spent = sum(t.user_attrs["stage"]["train_steps"] + t.user_attrs["stage"]["forward_batches"] for t in trials)
        planned = SCREENS * screen + sum(n * finetunes[r] for r, n in enumerate(FINALISTS))
        assert spent == planned == TOTAL // len(BUDGETS) - 2  # 2 batches left over: less than one screen


def test_promotion_picks_the_best_of_its_budget(uninterrupted):
    _, study = uninterrupted
    for index in range(len(BUDGETS)):
        finalists = _by_budget(study, index, "finalist")
        rung0 = [t for t in finalists if t.user_attrs[SLOT_ATTR]["rung"] == 0]
        rung1 = [t for t in finalists if t.user_attrs[SLOT_ATTR]["rung"] == 1]
        assert len(rung0) == 2 and len(rung1) == 1
        best = max(rung0, key=lambda t: t.values[0])
        assert rung1[0].user_attrs["plan"] == best.user_attrs["plan"]
        assert rung1[0].user_attrs["finetune"]["steps"] == 6
        assert budget_winner(study.trials, BUDGETS[index]).number == rung1[0].number


def test_resume_and_two_workers_make_the_same_decisions_as_one_process(interrupted, uninterrupted, tmp_path, base_weights):
    _, resumed, first = interrupted
    _, one = uninterrupted
    assert sum(state == TrialState.COMPLETE for state, _ in first.values()) < len(one.trials)
    assert _decisions(resumed) == _decisions(one)
    raw = _config(tmp_path, base_weights)
    raw["workers"] = {"count": 2}
    raw["study"]["storage"] = f"sqlite:///{tmp_path / 'workers.db'}"
    workers = autoprune.search(config_from_dict(raw))
    assert len({t.user_attrs["worker"]["index"] for t in workers.trials}) == 2  # both took part
    assert _decisions(workers) == _decisions(one)


def test_the_report_trials_and_export_read_the_budgets(uninterrupted):
    config, study = uninterrupted
    frame = trials_frame(study)
    assert set(frame["budget"]) == set(BUDGETS)
    summaries = collect(study).budgets
    assert [s.budget for s in summaries] == list(BUDGETS)
    assert all(s.pairs == 2 and s.finalists == 3 and s.screens == SCREENS for s in summaries)
    chosen = select_trial(study, Selection("budget", 0.1))
    assert chosen.number == summaries[1].winner.number
    with pytest.raises(ConfigError, match="no finalist at budget 0.25; budgets with one: 0.5, 0.1") as error:
        select_trial(study, Selection("budget", 0.25))
    assert error.value.key == "--budget"


# -- fidelity ---------------------------------------------------------------------------------------------------


def test_rank_correlations_match_a_hand_computation():
    screen, tuned = [0.1, 0.4, 0.3, 0.2], [0.5, 0.9, 0.6, 0.7]
    # ranks: screen 1 4 3 2, tuned 1 4 2 3: d^2 = 0 + 0 + 1 + 1 -> rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman_rho(screen, tuned) == pytest.approx(0.8)
    # pairs: 6, discordant only (3rd, 4th): tau = (5 - 1) / 6
    assert kendall_tau(screen, tuned) == pytest.approx(4 / 6)
    assert math.isnan(spearman_rho([1.0, 2.0], [2.0, 1.0]))


def _trial(number: int, value: float, slot: dict[str, Any], **attrs: Any) -> optuna.trial.FrozenTrial:
    dist = optuna.distributions.CategoricalDistribution([0.5])
    return optuna.trial.create_trial(
        params={"budget": 0.5}, distributions={"budget": dist}, values=[value, 0.49],
        user_attrs={SLOT_ATTR: slot, "fidelity": "finetune" if slot["kind"] == "finalist" else "screen", **attrs},
    )  # fmt: skip


def test_the_fidelity_of_a_fixed_study_matches_the_hand_computation():
    study = optuna.create_study(directions=["maximize", "minimize"])
    screens = [0.1, 0.4, 0.3, 0.2]
    for index, value in enumerate(screens):
        study.add_trial(_trial(index, value, {"budget": 0, "kind": "screen", "round": 0, "index": index}))
    for source, value in enumerate([0.5, 0.9, 0.6, 0.7]):
        study.add_trial(_trial(4 + source, value, {"budget": 0, "kind": "finalist", "rung": 0}, stage={"source": source}))
    (summary,) = budget_summaries(study)
    assert (summary.spearman, summary.kendall, summary.pairs) == (pytest.approx(0.8), pytest.approx(4 / 6), 4)
    assert summary.winner.values[0] == 0.9 and not summary.uninformative


def test_every_allocation_optimizer_proposes_the_same_round_from_the_same_history():
    dists = {"basis": ("categorical", ["uniform", "ranked"]), "scale:a": ("log_float", 0.5, 2.0)}
    history = [({"basis": "uniform", "scale:a": 1.0}, 0.5), ({"basis": "ranked", "scale:a": 1.5}, 0.7),
               ({"basis": "ranked", "scale:a": 0.7}, 0.6), ({"basis": "uniform", "scale:a": 1.9}, 0.4),
               ({"basis": "ranked", "scale:a": 1.2}, 0.8)]  # fmt: skip
    for name in ("tpe", "cmaes", "evolution", "random"):
        optimizer = ALLOCATION_OPTIMIZERS.get(name)()
        first = optimizer.propose(dists, history, 3, seed=7)
        assert first == ALLOCATION_OPTIMIZERS.get(name)().propose(dists, history, 3, seed=7)
        assert len(first) == 3 and all(0.5 <= p["scale:a"] <= 2.0 and p["basis"] in ("uniform", "ranked") for p in first)


def test_tied_layers_keep_one_width_per_layer_type_at_the_budget():
    space, cost_of = _space_on("vit_tiny", SpaceSpec(ratio="tied", criterion="tied"), ("l1",), (0.25,))
    params = {**baseline_params(space, 0.25)[-1]}
    params.update({k: (0.7 if i % 2 else 1.6) for i, k in enumerate(params) if k.startswith("scale")})
    plan = space.plan_from_params(params)
    assert cost_of(plan) <= 0.25
    by_knob: dict[str, set[float]] = {}
    for group, entry in plan.groups.items():
        by_knob.setdefault(tied_knob(group), set()).add(entry.ratio)
    assert any(len([g for g in plan.groups if tied_knob(g) == k]) > 1 for k in by_knob)  # layers really repeat
    assert all(len(ratios) == 1 for ratios in by_knob.values())
