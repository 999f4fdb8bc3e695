"""NNI 3.0 config_list support and the NNI-style AutoPruner, checked against NNI's own selection and schema."""

from __future__ import annotations

import random

import optuna
import pytest
import torch
from nni.compression.base.config import default_config_schema, select_modules_by_config

import autoprune
from autoprune import PruningPlan, find_groups
from autoprune.config import config_from_dict
from autoprune.data import digits
from autoprune.errors import ConfigError
from autoprune.evaluate import recalibrate_bn
from autoprune.metrics import accuracy
from autoprune.models import MODELS, build_model
from autoprune.nni import AutoPruner, Evaluator, config_list_bounds, parse_config_list, plan_to_config_list
from conftest import run_cli, tiny_config, write_config

X = torch.zeros(1, 1, 16, 16)
QUICK = {"base_training": {"epochs": 0}, "finetune": {"epochs": 0, "bn_recalibration_batches": 1}}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = build_model("resnet_small", in_channels=1, num_classes=10).eval()
    return model, find_groups(model, X, ignore=["fc"])


def _types(model):
    return {n: type(m).__name__ for n, m in model.named_modules() if n}


@pytest.mark.parametrize("name", [n for n in MODELS.names() if n != "vit_ti16"])  # vit_ti16: 224x224 inputs only
def test_a_plan_round_trips_through_an_nni_config_list_on_the_builtin_models(name):
    model = build_model(name, in_channels=1, num_classes=10).eval()
    groups = find_groups(model, X, ignore=["fc", "*#heads"])  # NNI has no whole-head pruning to compare with
    rng = random.Random(0)
    plan = PruningPlan({g.name: (rng.choice([0.0, 0.25, 0.5, 0.7]), "l1") for g in groups})
    config_list = plan_to_config_list(plan.groups)
    schema = default_config_schema("pruning")
    for entry in config_list:
        schema.validate(entry)  # valid NNI 3.0, by NNI's own schema
        selected, _, _ = select_modules_by_config(model, entry)  # and NNI selects exactly those roots
        assert set(selected) == set(entry["op_names"])
    bounds = config_list_bounds(parse_config_list(config_list), groups, _types(model), (0.0, 0.9))
    assert bounds == {n: (g.ratio, g.ratio) for n, g in plan.groups.items()}
    assert list(bounds) == [g.name for g in groups]  # model order


def test_selection_matches_nnis_and_later_entries_win(resnet):
    model, groups = resnet
    config_list = [
        {"op_types": ["Conv2d"], "exclude_op_names_re": [r"layer1\."], "max_sparse_ratio": 0.6},
        {"op_names_re": [r"layer3\.\d\.conv1"], "op_types": ["Conv2d"], "min_sparse_ratio": 0.2, "max_sparse_ratio": 0.8},
        {"op_names": ["layer2.0.conv1"], "sparse_ratio": 0.9, "max_sparse_ratio": 0.5},  # NNI clamps to 0.5
    ]
    bounds = config_list_bounds(parse_config_list(config_list), groups, _types(model), (0.1, 0.7))
    roots = {g.name for g in groups}
    nni_selected = set().union(*(set(select_modules_by_config(model, e)[0]) for e in config_list))
    assert set(bounds) == nni_selected & roots
    assert "layer1.0.conv1" not in bounds and "conv1" in bounds
    assert bounds["conv1"] == (0.1, 0.6)
    assert bounds["layer3.0.conv1"] == bounds["layer3.1.conv1"] == (0.2, 0.8)
    assert bounds["layer2.0.conv1"] == (0.5, 0.5)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"op_types": ["Conv2d"], "sparse_threshold": 0.1}, "'sparse_threshold' is not supported"),
        ({"op_types": ["Conv2d"], "granularity": "out_channel"}, "'granularity' is not supported"),
        ({"op_types": ["Conv2d"], "total_sparsity": 0.5}, "NNI 2 key"),
        ({"op_types": ["Conv2d"], "sparse_ration": 0.5}, "did you mean 'sparse_ratio'"),
        ({"sparse_ratio": 0.5}, "needs one of op_types, op_names, op_names_re"),
        ({"op_types": ["Conv2d"], "sparse_ratio": 1.0}, "less than 1"),
    ],
)
def test_a_key_autoprune_cannot_honour_is_an_error_naming_it(entry, message):
    with pytest.raises(ConfigError, match=message) as info:
        parse_config_list([{"op_types": ["Linear"]}, entry])
    assert str(info.value).startswith("config_list[1]")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"op_names": ["layer1.0.conv2"]}, "'layer1.0.conv2' is not the root of a prunable group"),
        ({"op_names": ["layer1.0.conv"]}, "no module named 'layer1.0.conv' in the model \\(did you mean"),
        ({"op_types": ["Conv2D"]}, "did you mean 'Conv2d'"),
        ({"op_types": ["BatchNorm2d"]}, "selects no prunable group"),
    ],
)
def test_a_selector_autoprune_cannot_honour_is_an_error(resnet, entry, message):
    model, groups = resnet
    with pytest.raises(ConfigError, match=message):
        config_list_bounds(parse_config_list([entry]), groups, _types(model), (0.0, 0.9))


def test_a_config_with_an_nni_config_list_searches_only_the_selected_groups_within_their_bounds(tmp_path):
    config_list = [
        {"op_names_re": [r"layer[23]\..*conv1"], "max_sparse_ratio": 0.4},
        {"op_names": ["layer3.1.conv1"], "sparse_ratio": 0.5},
    ]
    config = config_from_dict(
        tiny_config(tmp_path / "run", prune={"search_space": "per_layer", "nni_config_list": config_list}, study={"n_trials": 1}, **QUICK)
    )
    study = autoprune.search(config)
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE])
    assert len(trials) == 1
    for trial in trials:
        groups = trial.user_attrs["plan"]["groups"]
        assert set(groups) == {"layer2.0.conv1", "layer2.1.conv1", "layer3.0.conv1", "layer3.1.conv1"}
        assert groups["layer3.1.conv1"]["ratio"] == 0.5
        assert all(0.0 <= g["ratio"] <= 0.4 for n, g in groups.items() if n != "layer3.1.conv1")


def test_groups_sharing_a_knob_with_different_bounds_are_an_error(tmp_path):
    config_list = [{"op_types": ["Conv2d"], "max_sparse_ratio": 0.4}, {"op_names": ["layer3.1.conv1"], "sparse_ratio": 0.5}]
    config = config_from_dict(
        tiny_config(tmp_path / "run", prune={"search_space": "per_stage", "nni_config_list": config_list}, **QUICK)
    )
    with pytest.raises(ConfigError, match="share the searched ratio 'ratio:layer3'.*per_layer"):
        autoprune.search(config)


def test_an_unsupported_nni_key_on_the_cli_is_one_line_and_exit_2(tmp_path):
    config = tiny_config(tmp_path / "run", prune={"nni_config_list": [{"op_types": ["Conv2d"], "granularity": "out_channel"}]})
    result = run_cli("search", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "prune.nni_config_list[0]" in result.stderr and "granularity" in result.stderr


def test_autopruner_compresses_in_nnis_call_shape_and_honours_the_config_list(resnet):
    model, _ = resnet
    data = digits(batch_size=128)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = {"train": 0}

    def training_func(m):
        calls["train"] += 1
        recalibrate_bn(m, data.train, 2)

    pruner = AutoPruner(
        model,
        [{"op_types": ["Conv2d"], "max_sparse_ratio": 0.7}, {"op_names": ["layer3.1.conv1"], "sparse_ratio": 0.5}],
        evaluator=Evaluator(evaluating_func=lambda m: accuracy(m, data.val), training_func=training_func),
        dummy_input=X,
        search={"n_trials": 3, "criteria": ["l1", "fpgm"], "max_macs": 0.6},
    )
    pruned, plan = pruner.compress()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert plan.groups["layer3.1.conv1"].ratio == 0.5
    assert all(g.ratio <= 0.7 and g.criterion in ("l1", "fpgm") for g in plan.groups.values())
    done = [t for t in pruner.study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    feasible = [t for t in done if t.user_attrs["macs_relative"] <= 0.6]
    best = max(feasible, key=lambda t: (t.values[0], -t.values[1]))
    assert PruningPlan.from_dict(best.user_attrs["plan"]) == plan
    assert accuracy(pruned, data.val) == pytest.approx(best.values[0])
    macs, _ = autoprune.count_macs_params(pruned, X)
    assert macs / pruner.base_counts[0] == pytest.approx(best.user_attrs["macs_relative"]) and macs / pruner.base_counts[0] <= 0.6
    assert calls["train"] == len(feasible)  # only candidates within max_macs are fine-tuned


def test_autopruner_refuses_bad_search_options(resnet):
    model, _ = resnet
    evaluator = Evaluator(evaluating_func=lambda m: 0.0)
    with pytest.raises(ConfigError, match="search.n_trial"):
        AutoPruner(model, [{"op_types": ["Conv2d"]}], evaluator, X, search={"n_trial": 3})
    with pytest.raises(ConfigError, match="did you mean 'fpgm'"):
        AutoPruner(model, [{"op_types": ["Conv2d"]}], evaluator, X, search={"criteria": ["fgpm"]})


@pytest.mark.parametrize(
    "search, key, message",
    [
        ({"sampler": "tpee"}, "search.sampler", "did you mean 'tpe'"),
        ({"storage": "nosuchdb://x"}, "search.storage", "nosuchdb"),
        ({"study_name": ""}, "search.study_name", "at least 1"),
    ],
)
def test_autopruner_refuses_a_bad_search_option_at_construction_naming_it(resnet, search, key, message):
    model, _ = resnet
    evaluator = Evaluator(evaluating_func=lambda m: 0.0)
    with pytest.raises(ConfigError) as info:
        AutoPruner(model, [{"op_types": ["Conv2d"]}], evaluator, X, search={"n_trials": 1, **search})
    assert info.value.key == key and message in str(info.value) and "\n" not in str(info.value)


def test_autopruner_refuses_a_gradient_criterion_without_gradient_batches_at_construction(resnet):
    model, _ = resnet
    evaluator = Evaluator(evaluating_func=lambda m: 0.0)
    with pytest.raises(ConfigError, match="'taylor'.*gradient_batches") as info:
        AutoPruner(model, [{"op_types": ["Conv2d"]}], evaluator, X, search={"criteria": ["l1", "taylor"]})
    assert info.value.key == "evaluator.gradient_batches"


@pytest.mark.parametrize(
    "args, key",
    [
        ({"model": "resnet"}, "model"),
        ({"evaluator": lambda m: 0.0}, "evaluator"),
        ({"search": ["n_trials", 3]}, "search"),
    ],
)
def test_autopruner_refuses_a_bad_constructor_argument_naming_it(resnet, args, key):
    model, _ = resnet
    kwargs = {"model": model, "config_list": [{"op_types": ["Conv2d"]}], "evaluator": Evaluator(lambda m: 0.0), "dummy_input": X}
    with pytest.raises(ConfigError) as info:
        AutoPruner(**{**kwargs, **args})
    assert info.value.key == key


@pytest.mark.parametrize(
    "args, key",
    [
        ({"evaluating_func": 0.5}, "evaluating_func"),
        ({"training_func": "train"}, "training_func"),
        ({"loss_fn": "cross_entropy"}, "loss_fn"),
        ({"gradient_batches": 3}, "gradient_batches"),
    ],
)
def test_evaluator_refuses_what_it_cannot_call_naming_the_argument(args, key):
    with pytest.raises(ConfigError) as info:
        Evaluator(**{"evaluating_func": lambda m: 0.0, **args})
    assert info.value.key == key


def test_autopruner_with_a_storage_url_keeps_the_study_there(resnet, tmp_path):
    model, _ = resnet
    url = f"sqlite:///{tmp_path / 'nni.db'}"
    pruner = AutoPruner(
        model, [{"op_types": ["Conv2d"]}], Evaluator(lambda m: 0.0), X, search={"n_trials": 2, "storage": url, "study_name": "s"}
    )
    pruner.compress()
    stored = optuna.load_study(study_name="s", storage=url)
    assert len(stored.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == 2
