"""Every zoo model: groups, pruning at uniform and random plans, plan round trip, a tiny search."""

from __future__ import annotations

import fnmatch
import random
import warnings

import pytest
import torch
from torch import nn

import autoprune
from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.config import config_from_dict
from autoprune.engine import UnsupportedGroupWarning, find_output_layers
from autoprune.models import build_model
from conftest import tiny_config

X = torch.randn(2, 1, 16, 16)

# model -> (its output head, classes); the head keeps its outputs, as a user's config would say.
ZOO = {
    "resnet_small": ("fc", 10),
    "vgg_bn": ("classifier", 10),
    "mobilenet_small": ("classifier", 10),
    "densenet_small": ("classifier", 10),
    "shufflenet_small": ("classifier", 10),
    "vit_tiny": ("head", 10),
    "deeplab_small": ("*cls_conv*", 11),
}
# ShuffleNetV2's stride-2 units concatenate two branches and shuffle: DepGraph maps the shortcut's channels
# wrongly there, and the dry run must catch exactly those groups.
EXPECTED_UNSUPPORTED = {"shufflenet_small": {"stage1.0.shortcut.2", "stage2.0.shortcut.2"}}


def _build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, in_channels=1, num_classes=ZOO[name][1]).eval()


@pytest.fixture(scope="module", params=sorted(ZOO))
def zoo(request):
    name = request.param
    model = _build(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(model, X, ignore=[ZOO[name][0]])
    return name, model, groups, caught


def test_every_zoo_model_has_groups_and_warns_only_about_what_it_cannot_prune(zoo):
    name, model, groups, caught = zoo
    assert len(groups) >= 4
    warned = {str(w.message).split("'")[1] for w in caught if issubclass(w.category, UnsupportedGroupWarning)}
    assert warned == EXPECTED_UNSUPPORTED.get(name, set())
    assert not warned & {g.name for g in groups}
    assert all(g.channels > 1 for g in groups)


def test_every_zoo_head_is_found_as_the_output_layer_and_ignoring_it_changes_no_group(zoo):
    name, model, groups, _ = zoo
    head = ZOO[name][0]
    outputs = find_output_layers(model, X)
    assert len(outputs) == 1 and fnmatch.fnmatchcase(outputs[0], head)
    unignored = find_groups(model, X, check=False)  # the dry run's exclusions are the same either way
    assert [g.name for g in unignored if g.name not in EXPECTED_UNSUPPORTED.get(name, set())] == [g.name for g in groups]
    with_head = find_groups(model, X, check=False, allow_output_pruning=True)
    assert [g.name for g in with_head if g.name != outputs[0]] == [g.name for g in unignored]


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_uniform_plans_run_keep_the_output_shape_and_cut_macs_as_planned(zoo, ratio):
    name, model, groups, _ = zoo
    pruned, report = apply_plan(model, X, PruningPlan.uniform(groups, ratio, "l1"))
    assert pruned(X).shape == model(X).shape
    assert sum(p.numel() for p in pruned.parameters()) == report.params_after < report.params_before
    # MACs of a layer scale with its kept inputs times kept outputs: (1 - r)^2, or (1 - r) where the image or
    # the head is unpruned; (1 - r)^3 for qkv, whose outputs lose heads and head dims both.
    keep = 1.0 - ratio
    assert keep**3 < report.macs_ratio < keep * 1.05


def test_a_larger_uniform_ratio_removes_more_macs(zoo):
    name, model, groups, _ = zoo
    ratios = [apply_plan(model, X, PruningPlan.uniform(groups, r, "l2"))[1].macs_ratio for r in (0.2, 0.4, 0.6)]
    assert ratios[0] > ratios[1] > ratios[2]


@pytest.mark.parametrize("seed", [0, 1])
def test_random_per_group_plans_run_and_round_trip(zoo, seed):
    name, model, groups, _ = zoo
    rng = random.Random(seed)
    plan = PruningPlan({g.name: (rng.uniform(0.0, 0.8), rng.choice(["l1", "l2", "fpgm"])) for g in groups})
    pruned, report = apply_plan(model, X, plan)
    assert pruned(X).shape == model(X).shape
    assert report.macs_after < report.macs_before
    # The plan as JSON, applied to a freshly built copy of the same base, gives the same model.
    again, _ = apply_plan(_build(name), X, PruningPlan.from_json(plan.to_json()))
    first, second = pruned.state_dict(), again.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def _head_zeroed_vit(kind: str) -> nn.Module:
    model = _build("vit_tiny")
    attn = model.blocks[0].attn
    heads, dim = attn.num_heads, attn.proj.in_features
    head_dim = dim // heads
    with torch.no_grad():
        qkv = attn.qkv.weight.view(3, heads, head_dim, -1)
        bias = attn.qkv.bias.view(3, heads, head_dim)
        proj = attn.proj.weight.view(-1, heads, head_dim)
        if kind == "heads":  # head 2 contributes nothing
            qkv[:, 2].zero_(), bias[:, 2].zero_(), proj[:, 2].zero_()
        else:  # position 5 of every head contributes nothing
            qkv[:, :, 5].zero_(), bias[:, :, 5].zero_(), proj[:, :, 5].zero_()
    return model


@pytest.mark.parametrize("kind", ["heads", "dims"])
def test_attention_head_and_head_dim_pruning_removes_exactly_the_dead_units(kind):
    model = _head_zeroed_vit(kind)
    name = "blocks.0.attn.qkv" + ("#heads" if kind == "heads" else "")
    ratio = 0.25 if kind == "heads" else 1 / 16
    pruned, report = apply_plan(model, X, PruningPlan({name: (ratio, "l1")}))
    attn = pruned.blocks[0].attn
    assert report.channels[name] == ((4, 3) if kind == "heads" else (16, 15))
    assert (attn.num_heads, attn.qkv.out_features, attn.proj.in_features) == (
        (3, 144, 48) if kind == "heads" else (4, 180, 60)
    )
    torch.testing.assert_close(pruned(X), model(X), atol=1e-5, rtol=1e-5)


def test_vit_embedding_group_prunes_the_class_token_and_position_embedding():
    model = _build("vit_tiny")
    groups = find_groups(model, X, ignore=["head"])
    embed = next(g for g in groups if g.name == "patch_embed")
    assert {"cls_token", "pos_embed", "blocks.0.attn.qkv", "blocks.1.fc2"} <= set(embed.members)
    pruned, _ = apply_plan(model, X, PruningPlan({"patch_embed": (0.5, "l1")}))
    assert pruned.cls_token.shape == (1, 1, 32) and pruned.pos_embed.shape == (1, 17, 32)
    assert {g.name for g in groups} >= {"blocks.0.attn.qkv", "blocks.0.attn.qkv#heads", "blocks.1.fc1"}


def test_ignore_glob_can_switch_off_head_pruning():
    groups = find_groups(_build("vit_tiny"), X, ignore=["head", "*#heads"])
    assert not [g for g in groups if g.name.endswith("#heads")]
    assert "blocks.0.attn.qkv" in {g.name for g in groups}


# The other zoo models go through the same engine calls, covered above; deeplab_small's search is in
# test_segmentation.py.
@pytest.mark.parametrize("name", ["densenet_small", "shufflenet_small", "vit_tiny"])
def test_a_tiny_search_completes_on_zoo_models(tmp_path, name):
    head, _ = ZOO[name]
    config = tiny_config(
        tmp_path / "run",
        None,
        model={"builtin": name, "input_shape": [1, 16, 16], "weights": None},
        data={"builtin": "digits", "batch_size": 128, "val_fraction": 0.05},
        base_training={"epochs": 0},
        prune={"ignore": [head], "search_space": "uniform", "criteria": ["l1"]},
        finetune={"epochs": 0, "bn_recalibration_batches": 1},
        study={"n_trials": 2},
    )
    study = autoprune.search(config_from_dict(config))
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 2
    assert all(0.0 <= t.values[0] <= 1.0 and 0.0 < t.values[1] < 1.0 for t in complete)


def test_a_heads_glob_counts_as_matching():
    from autoprune.engine import check_ignore_globs

    assert check_ignore_globs(_build("vit_tiny"), ["*#heads", "head", "nothing*"]) == ["nothing*"]
