"""The built-in criteria beyond the norms: fidelity on hand-built filters, gradients, BatchNorm, randomness."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.criteria import GroupTensors, available_criteria, get_criterion, needs_gradients
from autoprune.engine import ModelGraph, group_seed, select_removed
from autoprune.errors import PruningError
from autoprune.models import build_model

X = torch.randn(2, 1, 16, 16)


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet_small", in_channels=1, num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.uniform_(m.weight, -2.0, 2.0)  # distinct |gamma| so bn_scale has a clear answer
    return model


@pytest.fixture(scope="module")
def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 1, 16, 16, generator=generator), torch.randint(0, 10, (8,), generator=generator)) for _ in range(2)]


def test_every_builtin_criterion_is_registered():
    assert {"l1", "l2", "fpgm", "taylor", "lamp", "bn_scale", "random"} <= set(available_criteria())
    assert needs_gradients("taylor") and not needs_gradients("l1")


def test_fpgm_prunes_the_filters_nearest_the_geometric_median_of_a_conv():
    # Five 1x1 filters on a line at 0, 1, 2, 10, 11 (times a direction): the geometric median is the point at 2.
    # Sums of distances: 24, 21, 20, 28, 31, so FPGM removes the filter at 2, then 1, then 0; a norm removes 0 first.
    direction = torch.tensor([3.0, -4.0]) / 5.0
    positions = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0])
    conv = nn.Conv2d(2, 5, 1, bias=False)
    with torch.no_grad():
        conv.weight.copy_((positions[:, None] * direction + torch.tensor([1.0, 1.0]))[:, :, None, None])
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(5, 3, 1)).eval()
    x = torch.randn(1, 2, 4, 4)
    for ratio, removed in ((0.2, [2]), (0.4, [1, 2]), (0.6, [0, 1, 2])):
        pruned, _ = apply_plan(model, x, PruningPlan({"0": (ratio, "fpgm")}))
        kept = [i for i in range(5) if i not in removed]
        assert torch.equal(pruned[0].weight, conv.weight[kept])
    pruned, _ = apply_plan(model, x, PruningPlan({"0": (0.2, "l2")}))
    assert not torch.equal(pruned[0].weight, conv.weight[[0, 1, 3, 4]])


def test_taylor_removes_the_filters_with_the_smallest_squared_gradient_weight_product():
    # A network whose gradient is known in closed form, so that the ranking has wide gaps, not round-off ties:
    # y = sum_i v_i * (w_i * x), loss = sum(y), so dL/dw_i = v_i * sum(x) and filter i scores (v_i w_i sum(x))^2.
    # Every w_i is 1 (a norm sees six ties); the readout v orders the scores 1 : 4 : 9 : 16 : 25 : 36 (times a
    # constant), so taylor removes the filters whose v is 1, 2 and 3. (A conv followed by a training-mode
    # BatchNorm has sum(g * w) = 0 in exact arithmetic, so it cannot serve: its ranking is pure round-off.)
    readout = torch.tensor([1.0, 5.0, 2.0, 6.0, 3.0, 4.0])
    model = nn.Sequential(nn.Conv2d(1, 6, 1, bias=False), nn.Conv2d(6, 1, 1, bias=False)).eval()
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[1].weight.copy_(readout[None, :, None, None])
    x = torch.rand(1, 1, 4, 4) + 0.5
    batches = [(x, None), (2 * x, None)]
    pruned, _ = apply_plan(
        model, x, PruningPlan({"0": (0.5, "taylor")}), gradient_batches=batches, loss_fn=lambda out, _: out.sum()
    )
    assert torch.equal(pruned[1].weight.flatten(), readout[[1, 3, 5]])
    # Checked against autograd on an independent copy, in the layout the criterion sees.
    import copy

    reference = copy.deepcopy(model)
    for inputs, _ in batches:
        reference(inputs).sum().backward()
    weight = reference[0].weight
    scores = get_criterion("taylor")(GroupTensors("0", weight.detach().flatten(1), grads=weight.grad.flatten(1) / 2))
    assert select_removed(scores, keep=3) == [0, 2, 4]


def test_taylor_leaves_the_base_model_untouched_and_no_gradients_behind(resnet, batches):
    state_before = {k: v.clone() for k, v in resnet.state_dict().items()}
    pruned, report = apply_plan(resnet, X, PruningPlan({"layer3.1.conv1": (0.5, "taylor")}), gradient_batches=batches)
    assert report.channels["layer3.1.conv1"] == (128, 64)
    # the base model is untouched (weights and BN statistics) and the pruned copy carries no gradients
    assert all(torch.equal(state_before[k], v) for k, v in resnet.state_dict().items())
    assert all(p.grad is None for p in list(resnet.parameters()) + list(pruned.parameters()))


def test_taylor_scores_a_conv_followed_by_batchnorm_above_round_off(resnet, batches):
    # In training mode BatchNorm makes the loss invariant to a filter's scale, so sum(grad * weight) is zero but
    # for round-off (about 1e-15 of its magnitude); gradients are taken in evaluation mode, where it is not.
    from autoprune.engine import accumulate_gradients

    model = copy.deepcopy(resnet)
    accumulate_gradients(model, batches, nn.functional.cross_entropy)
    conv = model.layer3[1].conv1
    weight, grad = conv.weight.detach().flatten(1), conv.weight.grad.flatten(1)
    scores = get_criterion("taylor")(GroupTensors("layer3.1.conv1", weight, grads=grad))
    magnitude = ((grad.abs() * weight.abs()).sum(dim=1) ** 2).max()
    assert scores.max() > 1e-6 * magnitude
    assert scores.unique().numel() > scores.numel() // 2


def test_taylor_without_batches_is_an_error_naming_the_criterion(resnet):
    with pytest.raises(PruningError, match="'taylor' needs gradients"):
        apply_plan(resnet, X, PruningPlan({"conv1": (0.5, "taylor")}))


def test_group_scope_gives_gradients_in_the_layout_of_the_weights(resnet, batches):
    from autoprune.engine import accumulate_gradients
    import copy

    model = copy.deepcopy(resnet)
    graph = ModelGraph(model, X)
    accumulate_gradients(model, batches, nn.functional.cross_entropy)
    tensors = graph.group_tensors("conv1", "group")
    assert tensors.grads is not None and tensors.grads.shape == tensors.weights.shape
    assert tensors.bn_scale is not None and tensors.bn_scale.shape == (32,)


def test_bn_scale_layer_scope_reads_the_root_batchnorm_and_group_scope_sums_the_coupled_ones(resnet):
    gammas = resnet.bn1.weight.detach().abs()
    pruned, _ = apply_plan(resnet, X, PruningPlan({"conv1": (0.25, "bn_scale")}))
    kept = sorted(torch.argsort(gammas, descending=True)[:24].tolist())
    assert torch.equal(pruned.conv1.weight, resnet.conv1.weight[kept])

    coupled = [resnet.bn1, resnet.layer1[0].bn2, resnet.layer1[1].bn2]
    tensors = ModelGraph(resnet, X).group_tensors("conv1", "group")
    assert torch.allclose(tensors.bn_scale, sum(bn.weight.detach().abs() for bn in coupled))


def test_bn_scale_on_a_group_without_batchnorm_is_an_error_naming_the_group():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    with pytest.raises(PruningError, match=r"group '0'.*bn_scale.*no(ne)?"):
        apply_plan(model, torch.randn(1, 3, 8, 8), PruningPlan({"0": (0.5, "bn_scale")}))


def test_lamp_scores_follow_the_paper_and_rank_like_l2_within_a_group():
    weights = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0], [4.0, 0.0]])  # squared norms 9, 1, 4, 16
    scores = get_criterion("lamp")(GroupTensors("g", weights))
    assert torch.allclose(scores, torch.tensor([9 / 25, 1 / 30, 4 / 29, 16 / 16]))
    assert select_removed(scores, 2) == select_removed(get_criterion("l2")(GroupTensors("g", weights)), 2)


def test_random_is_reproducible_for_a_plan_and_differs_between_plans(resnet):
    groups = find_groups(resnet, X, ignore=["fc"])
    plan = PruningPlan.uniform(groups, 0.5, "random")
    first, _ = apply_plan(resnet, X, plan)
    again, _ = apply_plan(resnet, X, PruningPlan.from_json(plan.to_json()))
    assert torch.equal(first.layer3[1].conv1.weight, again.layer3[1].conv1.weight)
    other, _ = apply_plan(resnet, X, PruningPlan.uniform(groups, 0.5, "random", round_to=2))
    assert not torch.equal(first.layer3[1].conv1.weight, other.layer3[1].conv1.weight)
    assert group_seed(plan, "conv1") != group_seed(plan, "layer1.0.conv1")
