from __future__ import annotations

import pytest
import torch
from torch import nn

import autoprune
from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.errors import PruningError
from autoprune.models import build_model
from autoprune.plan import kept_channels

from conftest import RESNET_SMALL_GROUPS

X = torch.randn(2, 1, 16, 16)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    torch.manual_seed(0)
    return build_model("resnet_small", in_channels=1, num_classes=10).eval()


@pytest.fixture(scope="module")
def groups(model):
    return find_groups(model, X, ignore=["fc"])


def _state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_groups_are_named_by_their_root_in_model_order(groups):
    names = [g.name for g in groups]
    assert tuple(names) == RESNET_SMALL_GROUPS
    assert [g.channels for g in groups] == [32, 32, 32, 64, 64, 64, 128, 128, 128]


def test_residual_adds_couple_a_whole_stage_into_one_group(groups):
    stem = next(g for g in groups if g.name == "conv1")
    # the stem's channels flow through both residual adds of layer1, into layer2's first convs
    assert {"layer1.0.conv2", "layer1.1.conv2", "layer2.0.conv1", "layer2.0.downsample.0"} <= set(stem.members)


def test_ignored_head_keeps_its_outputs_and_forms_no_group(model, groups):
    assert all(g.name != "fc" for g in groups)
    assert len(find_groups(model, X, allow_output_pruning=True)) == len(groups) + 1


def test_the_head_is_found_and_kept_without_being_ignored(model, groups):
    assert [g.name for g in find_groups(model, X)] == [g.name for g in groups]
    assert autoprune.engine.find_output_layers(model, X) == ["fc"]


def test_apply_plan_prunes_a_copy_and_leaves_the_base_untouched(model, groups):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, report = apply_plan(model, X, PruningPlan.uniform(groups, 0.5, "l1"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert pruned is not model and pruned.conv1.out_channels == 16 and model.conv1.out_channels == 32


def test_pruned_model_runs_with_the_same_output_shape_and_fewer_macs(model, groups):
    pruned, report = apply_plan(model, X, PruningPlan.uniform(groups, 0.5, "fpgm"))
    assert pruned(X).shape == model(X).shape == (2, 10)
    assert 0.2 < report.macs_ratio < 0.3  # halving every coupled width quarters the MACs, roughly
    assert report.params_after < report.params_before
    assert report.channels["layer3.1.conv1"] == (128, 64)
    assert sum(p.numel() for p in pruned.parameters()) == report.params_after


@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm"])
@pytest.mark.parametrize("scope", ["layer", "group"])
def test_the_same_plan_gives_the_same_model_bit_for_bit(model, groups, criterion, scope):
    plan = PruningPlan({g.name: (0.1 * (i % 8), criterion) for i, g in enumerate(groups)}, scope=scope)
    first, _ = apply_plan(model, X, plan)
    second, _ = apply_plan(model, X, PruningPlan.from_json(plan.to_json()))
    assert _state_equal(first, second)


@pytest.mark.parametrize("round_to", [1, 4, 8])
def test_every_group_gets_the_channel_count_the_plan_asks_for(model, groups, round_to):
    ratios = {g.name: 0.05 + 0.1 * i for i, g in enumerate(groups)}
    plan = PruningPlan({n: (r, "l2") for n, r in ratios.items()}, round_to=round_to)
    _, report = apply_plan(model, X, plan)
    for g in groups:
        expected = kept_channels(g.channels, ratios[g.name], round_to)
        assert report.channels[g.name] == (g.channels, expected)
        assert expected % round_to == 0


def test_kept_channels_rounds_up_to_multiples_and_never_reaches_zero():
    assert kept_channels(10, 0.7) == 3  # 10 * 0.3 is 3.0000000000000004 in floating point
    assert kept_channels(32, 0.5, 8) == 16
    assert kept_channels(30, 0.5, 8) == 16
    assert kept_channels(16, 0.99) == 1
    assert kept_channels(16, 0.99, 4) == 4
    assert kept_channels(3, 0.0, 8) == 3


def test_l1_keeps_the_top_l1_filters(model):
    pruned, _ = apply_plan(model, X, PruningPlan({"layer3.1.conv1": (0.5, "l1")}))
    conv = model.layer3[1].conv1
    norms = conv.weight.detach().abs().sum(dim=(1, 2, 3))
    kept = torch.sort(torch.topk(norms, 64).indices).values
    assert torch.equal(pruned.layer3[1].conv1.weight, conv.weight[kept])


def test_a_plan_naming_an_unknown_group_is_an_error_with_a_suggestion(model):
    with pytest.raises(PruningError, match="did you mean 'layer1.0.conv1'"):
        apply_plan(model, X, PruningPlan({"layer1.0.conv": (0.5, "l1")}))


def test_a_criterion_returning_bad_scores_is_an_error_naming_the_group(model):
    @autoprune.register_criterion("test_bad_shape")
    class BadShape(autoprune.Criterion):
        def __call__(self, tensors):
            return torch.zeros(tensors.channels + 1)

    with pytest.raises(PruningError, match="group 'layer1.0.conv1'"):
        apply_plan(model, X, PruningPlan({"layer1.0.conv1": (0.5, "test_bad_shape")}))


def test_report_round_trips_to_plain_data(model, groups):
    _, report = apply_plan(model, X, PruningPlan.uniform(groups, 0.25, "l2"))
    data = report.to_dict()
    assert data["macs_after"] == report.macs_after and data["channels"]["conv1"] == [32, 24]
