"""Unstructured pruning (torch.nn.utils.prune) and gradual schedules: masks, search, report, export."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

import autoprune
from autoprune.config import config_from_dict
from autoprune.engine import (
    apply_plan,
    apply_sparsity,
    compressed_bytes,
    count_nonzero_params,
    layer_sparsity,
    make_permanent,
    sparsifiable_layers,
)
from autoprune.errors import ConfigError, PruningError
from autoprune.evaluate import train
from autoprune.export import Selection, export_model, prune_gradually, step_fractions
from autoprune.models import build_model
from autoprune.plan import PruningPlan, SparsityPlan, kept_channels
from autoprune.report import write_report
from autoprune.study import prepare_task
from conftest import tiny_config

EXAMPLE = torch.zeros(1, 1, 8, 8)


def _chain() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()  # fmt: skip


def _zeros(model: nn.Module, layer: str) -> int:
    module = dict(model.named_modules())[layer]
    return int((module.weight == 0).sum())


def test_l1_unstructured_keeps_the_masks_torch_would_and_zeroes_the_planned_share_of_each_layer():
    model = _chain()
    plan = SparsityPlan("l1_unstructured", {"0": 0.5, "3": 0.8, "8": 0.3})
    sparsity = apply_sparsity(model, plan)
    reference = _chain()
    for name, amount in plan.amounts.items():
        prune.l1_unstructured(dict(reference.named_modules())[name], "weight", amount=amount)
    for name, amount in plan.amounts.items():
        module = dict(model.named_modules())[name]
        assert hasattr(module, "weight_orig") and hasattr(module, "weight_mask")  # torch's masking, not ours
        assert torch.equal(module.weight_mask, dict(reference.named_modules())[name].weight_mask)
        assert _zeros(model, name) == round(amount * module.weight.numel())
        assert sparsity[name] == pytest.approx(round(amount * module.weight.numel()) / module.weight.numel())


def test_random_unstructured_is_the_same_mask_for_the_same_plan_and_differs_from_l1():
    plan = SparsityPlan("random_unstructured", {"0": 0.5, "3": 0.5})
    first, second, l1 = _chain(), _chain(), _chain()
    apply_sparsity(first, plan)
    apply_sparsity(second, plan)
    apply_sparsity(l1, SparsityPlan("l1_unstructured", {"0": 0.5, "3": 0.5}))
    assert torch.equal(first[3].weight_mask, second[3].weight_mask)
    assert not torch.equal(first[3].weight_mask, l1[3].weight_mask)
    assert _zeros(first, "3") == _zeros(l1, "3") == 8 * 16 * 9 // 2


def test_global_unstructured_ranks_magnitudes_across_layers():
    model = _chain()
    layers = ["0", "3", "8"]
    sparsity = apply_sparsity(model, SparsityPlan("global", {name: 0.6 for name in layers}))
    modules = dict(model.named_modules())
    total = sum(modules[n].weight.numel() for n in layers)
    assert sum(_zeros(model, n) for n in layers) == round(0.6 * total)
    assert len({round(v, 6) for v in sparsity.values()}) > 1  # one amount, different per-layer sparsities
    pruned = torch.cat([modules[n].weight_orig[modules[n].weight_mask == 0].abs() for n in layers])
    kept = torch.cat([modules[n].weight_orig[modules[n].weight_mask == 1].abs() for n in layers])
    assert pruned.max() <= kept.min()


def test_a_global_plan_with_two_amounts_and_unknown_methods_or_layers_are_errors():
    with pytest.raises(ConfigError, match="one amount"):
        SparsityPlan("global", {"a": 0.5, "b": 0.6})
    with pytest.raises(ConfigError, match="did you mean 'l1_unstructured'"):
        SparsityPlan("l1_unstructure", {"a": 0.5})
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        SparsityPlan("l1_unstructured", {"a": 1.0})
    with pytest.raises(PruningError, match="'conv9'.*not a conv or linear layer"):
        apply_sparsity(_chain(), SparsityPlan("l1_unstructured", {"conv9": 0.5}))


def test_masks_become_permanent_plain_weights_holding_the_zeros():
    model = _chain()
    apply_sparsity(model, SparsityPlan("l1_unstructured", {"0": 0.5, "3": 0.75}))
    before = layer_sparsity(model, ["0", "3"])
    dense_size = compressed_bytes(_chain())
    assert compressed_bytes(model) < dense_size
    assert make_permanent(model) == ["0", "3"]
    keys = set(model.state_dict())
    assert not any(k.endswith(("_orig", "_mask")) for k in keys) and {"0.weight", "3.weight"} <= keys
    assert layer_sparsity(model, ["0", "3"]) == before
    assert isinstance(model[3].weight, nn.Parameter) and not prune.is_pruned(model)


def test_fine_tuning_keeps_masked_weights_at_zero(digits_data):
    model = build_model("resnet_small", in_channels=1, num_classes=10).eval()
    layers = sparsifiable_layers(model, ["fc"])
    assert "fc" not in layers and "conv1" in layers
    pruned, report = apply_plan(model, torch.zeros(1, 1, 16, 16), PruningPlan({}, sparsity=SparsityPlan("l1_unstructured", {n: 0.7 for n in layers})))
    assert report.macs_ratio == 1.0 and report.params_ratio == 1.0 and report.nonzero_params_ratio < 0.45
    orig_before = pruned.conv1.weight_orig.detach().clone()
    train(pruned, list(itertools.islice(digits_data.train, 5)), epochs=1, lr=0.05, seed=0)
    assert not torch.equal(pruned.conv1.weight_orig, orig_before)  # the fine-tune moved the weights ...
    with torch.no_grad():
        pruned(torch.zeros(1, 1, 16, 16))
    assert layer_sparsity(pruned, layers) == pytest.approx(report.sparsity)  # ... but not the masked ones


def test_structured_then_unstructured_removes_channels_and_sparsifies_what_survives():
    model = _chain()
    plan = PruningPlan({"0": (0.5, "l1"), "3": (0.25, "l2")}, sparsity=SparsityPlan("l1_unstructured", {"0": 0.5, "3": 0.5}))
    pruned, report = apply_plan(model, EXAMPLE, plan)
    assert report.channels == {"0": (8, 4), "3": (16, 12)}
    assert pruned[3].weight.shape == (12, 4, 3, 3) and _zeros(pruned, "3") == 12 * 4 * 9 // 2
    assert report.macs_ratio < 1.0 and report.nonzero_params_ratio < report.params_ratio
    assert count_nonzero_params(pruned) == report.nonzero_params_after
    again, _ = apply_plan(model, EXAMPLE, PruningPlan.from_json(plan.to_json()))
    assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), again.state_dict().values()))


def test_schedules_reach_the_plan_linearly_or_polynomially():
    assert step_fractions(4, "linear") == [0.25, 0.5, 0.75, 1.0]
    cubic = step_fractions(4, "polynomial", 3.0)
    assert cubic == pytest.approx([1 - 0.75**3, 1 - 0.5**3, 1 - 0.25**3, 1.0])
    assert step_fractions(1, "polynomial") == [1.0]
    with pytest.raises(ConfigError, match="unknown pruning schedule 'cubic'"):
        step_fractions(3, "cubic")


def _task(tmp_path, base_weights, **prune_options):
    raw = tiny_config(tmp_path / "run", base_weights, prune={**prune_options, "search_space": "per_layer"})
    return prepare_task(config_from_dict(raw))


def test_gradual_unstructured_pruning_follows_the_polynomial_schedule_step_by_step(tmp_path, base_weights):
    task = _task(tmp_path, base_weights, mode="unstructured", ignore=["fc"])
    plan = PruningPlan({}, sparsity=SparsityPlan("l1_unstructured", {n: 0.8 for n in task.base.layers}))
    fractions = step_fractions(3, "polynomial", 3.0)
    tuned = []
    model, steps = prune_gradually(task, plan, fractions, between=lambda k, m: tuned.append(k))
    assert tuned == [1, 2] and [s["fraction"] for s in steps] == fractions
    sizes = {n: m.weight.numel() for n, m in task.base.model.named_modules() if n in task.base.layers}
    for step in steps:
        for layer, reached in step["sparsity"].items():
            assert reached * sizes[layer] == pytest.approx(round(0.8 * step["fraction"] * sizes[layer]))
    assert steps[0]["nonzero_params"] > steps[1]["nonzero_params"] > steps[2]["nonzero_params"]


def test_gradual_combined_pruning_follows_the_schedule_in_channels_and_sparsity(tmp_path, base_weights):
    task = _task(tmp_path, base_weights, mode=["structured", "unstructured"])
    groups = [g.name for g in task.base.groups[:3]]
    plan = PruningPlan({g: (0.6, "l1") for g in groups}, sparsity=SparsityPlan("l1_unstructured", {"layer3.1.conv2": 0.5}))
    fractions = step_fractions(2, "linear")
    model, steps = prune_gradually(task, plan, fractions)
    base = {g.name: g.channels for g in task.base.groups}
    for step in steps:
        assert {g: step["channels"][g] for g in groups} == {g: kept_channels(base[g], 0.6 * step["fraction"]) for g in groups}
        assert step["sparsity"]["layer3.1.conv2"] == pytest.approx(0.5 * step["fraction"], abs=1e-3)
    _, one_shot = apply_plan(task.base.model, task.base.example_inputs, plan)
    assert {g: steps[-1]["channels"][g] for g in groups} == {n: after for n, (_, after) in one_shot.channels.items()}
    assert steps[-1]["sparsity"] == pytest.approx(one_shot.sparsity, abs=1e-3)


def test_config_errors_name_the_problem(tmp_path):
    def load(**sections):
        return config_from_dict(tiny_config(tmp_path, **sections))

    assert load(prune={"mode": "unstructured"}).objectives == ("metric", "nonzero_params")
    assert load(prune={"mode": ["unstructured", "structured"]}).prune.mode == ("structured", "unstructured")
    with pytest.raises(ConfigError, match=r"keeps every 'macs'.*nonzero_params"):
        load(prune={"mode": "unstructured"}, objectives=["metric", "macs"])
    with pytest.raises(ConfigError, match="structured") as err:
        load(prune={"mode": "channels"})
    assert err.value.key.startswith("prune.mode")
    with pytest.raises(ConfigError) as err:
        load(prune={"mode": "unstructured", "unstructured": {"methods": ["l1_unstructured", "magnitude"]}})
    assert err.value.key.startswith("prune.unstructured.methods")
    with pytest.raises(ConfigError, match="sparsity bounds are reversed"):
        load(prune={"mode": "unstructured", "unstructured": {"sparsity": [0.9, 0.1]}})
    with pytest.raises(ConfigError, match="max_macs cannot be met"):
        load(prune={"mode": "unstructured"}, constraints={"max_macs": 0.5})


@pytest.fixture(scope="module")
def unstructured_study(tmp_path_factory, base_weights):
    tmp_path = tmp_path_factory.mktemp("unstructured")
    raw = tiny_config(
        tmp_path / "run",
        base_weights,
        model={"input_shape": [1, 8, 8]},  # 8x8 digits keep every trial cheap; the mechanics are the same
        data={"options": {"size": 8}},
        prune={"mode": "unstructured", "search_space": "per_stage", "ignore": []},
        study={"n_trials": 5},
        export={
            "epochs": 1,
            "bn_recalibration_batches": 2,
            "schedule": {"kind": "polynomial", "steps": 3, "exponent": 3, "step_epochs": 1},
            "onnx_exporter": "off",
        },
        latency={"runs": 3, "warmup": 1},
    )
    study = autoprune.search(config_from_dict(raw))
    return tmp_path, raw, study


def test_an_unstructured_search_scores_the_metric_against_non_zero_params(unstructured_study):
    _, _, study = unstructured_study
    assert study.metric_names == ["accuracy", "non-zero params (relative)"]
    methods = set()
    finished = [t for t in study.trials if t.state.is_finished()]  # the rest of the warm start waits, unrun
    assert len(finished) == 5
    for trial in finished:
        assert trial.state.name == "COMPLETE"
        attrs = trial.user_attrs
        assert attrs["macs_relative"] == 1.0 and attrs["params_relative"] == 1.0
        assert trial.values[1] == pytest.approx(attrs["nonzero_params_relative"]) and trial.values[1] < 1.0
        assert 0 < attrs["compressed_relative"] < 1.0 and attrs["plan"]["groups"] == {}
        methods.add(attrs["plan"]["sparsity"]["method"])
    # The warm start queues uniform amounts with each method: l1, random and global all ran.
    assert methods == {"l1_unstructured", "random_unstructured", "global"}
    assert study.user_attrs["base"]["compressed_bytes"] > 0


def test_the_report_shows_the_front_against_non_zero_params_and_the_compressed_size(unstructured_study, tmp_path):
    _, _, study = unstructured_study
    write_report(study, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    assert "non-zero params (rel)" in text and "gzip size (rel)" in text and "MB of weights gzipped" in text
    assert "## Best under a non-zero params budget" in text
    trials = (tmp_path / "report" / "trials.csv").read_text().splitlines()[0].split(",")
    assert {"nonzero_params_relative", "compressed_relative", "sparsity_method", "sparsity.conv1"} <= set(trials)
    front = (tmp_path / "report" / "pareto.csv").read_text()
    assert "compressed_relative" in front and "sparsity" in front


def test_export_makes_the_masks_permanent_and_states_sparsity_and_compressed_size(unstructured_study, tmp_path):
    _, raw, study = unstructured_study
    best = max((t for t in study.trials if t.values and t.values[1] < 0.5), key=lambda t: t.values[0])
    result = export_model(config_from_dict(raw), Selection("trial", best.number), tmp_path / "out")
    record = json.loads((result.out / "export.json").read_text())
    state = torch.load(result.out / "weights.pt", weights_only=True)
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    for layer, fraction in record["sparsity"].items():
        weight = state[f"{layer}.weight"]
        assert float((weight == 0).sum()) / weight.numel() == pytest.approx(fraction)
    assert record["nonzero_params"]["relative"] < 0.5 and record["params"]["relative"] == 1.0
    assert record["compressed_bytes"]["after"] < record["compressed_bytes"]["before"]
    schedule = record["recovery"]["schedule"]
    assert schedule["kind"] == "polynomial" and schedule["fractions"] == pytest.approx(step_fractions(3, "polynomial", 3.0))
    reached = [step["nonzero_params"] for step in schedule["steps_reached"]]
    assert reached == sorted(reached, reverse=True) and reached[-1] <= record["nonzero_params"]["after"] + 1
    reloaded = autoprune.load(result.out)
    assert not prune.is_pruned(reloaded)
    assert layer_sparsity(reloaded, list(record["sparsity"])) == pytest.approx(record["sparsity"])
    assert record["artifacts"]["weights.pt"]["status"] == "ok" and record["artifacts"]["model.pt"]["status"] == "ok"


def test_a_combined_search_and_export_report_both_effects(tmp_path, base_weights):
    raw = tiny_config(
        tmp_path / "run",
        base_weights,
        model={"input_shape": [1, 8, 8]},
        data={"options": {"size": 8}},
        prune={"mode": ["structured", "unstructured"], "search_space": "uniform", "criteria": ["l1"],
               "unstructured": {"methods": ["l1_unstructured"], "sparsity": [0.3, 0.8]}},
        study={"n_trials": 3},
        export={"epochs": 1, "bn_recalibration_batches": 2, "onnx_exporter": "off"}, latency={"runs": 3, "warmup": 1},
    )  # fmt: skip
    study = autoprune.search(config_from_dict(raw))
    trial = study.trials[1]  # the uniform 0.5 baseline, its sparsity sampled
    assert trial.user_attrs["macs_relative"] < 0.5
    assert trial.user_attrs["nonzero_params_relative"] < trial.user_attrs["params_relative"] < 1.0
    result = export_model(config_from_dict(raw), Selection("trial", 1), tmp_path / "out")
    record = result.record
    assert record["macs"]["relative"] < 0.5 and all(after < before for before, after in record["channels"].values())
    assert record["nonzero_params"]["relative"] < record["params"]["relative"]
    assert min(record["sparsity"].values()) >= 0.3 - 1e-3
    assert "non-zero params" in result.summary() and "gzipped" in result.summary()
    model = autoprune.load(result.out)
    assert dict(model.named_modules())["conv1"].out_channels == record["channels"]["conv1"][1]
    assert not prune.is_pruned(model) and not any(k.endswith("_mask") for k in model.state_dict())
