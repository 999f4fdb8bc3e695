"""Global ranking (Torch-Pruning's ``global_pruning=True``) as a plan generator and as LeGR's search space, and the
searched criteria scope."""

from __future__ import annotations

import copy

import optuna
import pytest
import torch
import torch_pruning as tp
from torch import nn

from autoprune.config import SpaceSpec, config_from_dict
from autoprune.engine import (
    apply_plan,
    channel_importances,
    find_groups,
    find_output_layers,
    global_ranking_plan,
    importance_table,
    relative_macs,
)
from autoprune.errors import ConfigError, PruningError
from autoprune.models import build_model
from autoprune.plan import PruningPlan, kept_channels
from autoprune.ranking import ChannelRanking, plan_from_kept, ratio_for_kept, removal_limits
from autoprune.space import SearchSpace, load_space_spec
from autoprune.study import prepare_task

from conftest import RESNET_SMALL_GROUPS, tiny_config

X = torch.zeros(1, 1, 16, 16)


def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=10).eval()
    with torch.no_grad():  # BatchNorm scales that differ per channel, as after training
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.2, 1.5)
    return model


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    return _model("resnet_small")


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def _torch_pruning_global(model: nn.Module, ratio: float, p: int, reduction: str) -> nn.Module:
    reference = copy.deepcopy(model)
    outputs = set(find_output_layers(model, X))
    pruner = tp.pruner.MetaPruner(
        reference,
        X,
        importance=tp.importance.GroupMagnitudeImportance(p=p, group_reduction=reduction, normalizer="mean"),
        global_pruning=True,
        pruning_ratio=ratio,
        ignored_layers=[m for n, m in reference.named_modules() if n in outputs],
    )
    pruner.step()
    return reference


# Scope group scores every coupled layer, as group_reduction sum (or mean: the mean normaliser cancels the count);
# Torch-Pruning's p=2 ranks squared L2 norms, hence power 2 with l2.
@pytest.mark.parametrize("criterion, p, power", [("l1", 1, 1.0), ("l2", 2, 2.0)])
@pytest.mark.parametrize("ratio", [0.3, 0.6])
def test_group_scope_keeps_the_same_channels_as_torch_prunings_global_pruning(resnet, criterion, p, power, ratio):
    plan = global_ranking_plan(
        resnet, X, ratio=ratio, criterion=criterion, scope="group", power=power, groups=RESNET_SMALL_GROUPS, max_ratio=0.99
    )
    ours, _ = apply_plan(resnet, X, plan)
    assert plan.scope == "group" and {g.criterion for g in plan.groups.values()} == {criterion}
    assert _same_weights(ours, _torch_pruning_global(resnet, ratio, p, "sum"))


def test_layer_scope_keeps_the_same_channels_as_torch_pruning_ranking_the_root_layer():
    # group_reduction "first" scores Torch-Pruning's root; on a plain chain it is autoprune's root too (on a ResNet
    # Torch-Pruning roots a residual group at its downsample conv, autoprune at the first conv in model order).
    model = _model("vgg_bn")
    plan = global_ranking_plan(model, X, ratio=0.5, criterion="l1", scope="layer", max_ratio=0.99)
    assert _same_weights(apply_plan(model, X, plan)[0], _torch_pruning_global(model, 0.5, 1, "first"))


def test_a_macs_target_is_met_within_one_channel_step(resnet):
    plan = global_ranking_plan(resnet, X, macs=0.3, criterion="l2", scope="group", groups=RESNET_SMALL_GROUPS)
    macs_of = relative_macs(resnet, X)
    importances = channel_importances(resnet, X, "l2", "group", groups=RESNET_SMALL_GROUPS)
    channels = importances.channels
    ranking = ChannelRanking(importances.groups, limits=removal_limits(channels, (0.0, 0.9)))
    removed = sum(c - kept_channels(c, plan.groups[g].ratio) for g, c in channels.items())
    assert plan == plan_from_kept(ranking.kept(removed), channels, "l2", scope="group")
    assert macs_of(plan) <= 0.3 < macs_of(plan_from_kept(ranking.kept(removed - 1), channels, "l2", scope="group"))


def test_an_unreachable_macs_target_is_refused_with_the_lowest_reachable(resnet):
    with pytest.raises(PruningError, match="out of reach"):
        global_ranking_plan(resnet, X, macs=0.001, groups=RESNET_SMALL_GROUPS, max_ratio=0.5)


def test_the_plan_is_serialisable_and_reapplies_bit_identically(resnet):
    plan = global_ranking_plan(resnet, X, ratio=0.45, criterion="fpgm", groups=RESNET_SMALL_GROUPS)
    again = PruningPlan.from_json(plan.to_json())
    assert again == plan and again.to_json() == plan.to_json()
    first, report = apply_plan(resnet, X, plan)
    assert _same_weights(first, apply_plan(resnet, X, again)[0])
    # The ratios turn into exactly the ranked counts: Torch-Pruning's total - int(total * (1 - ratio)) removed.
    total = sum(before for before, _ in report.channels.values())
    assert total - sum(after for _, after in report.channels.values()) == total - int(total * (1 - 0.45))


def test_each_group_removes_its_own_lowest_scores_and_respects_the_cap_and_round_to(resnet):
    importances = channel_importances(resnet, X, "l1", "layer", groups=RESNET_SMALL_GROUPS)
    plan = global_ranking_plan(resnet, X, ratio=0.7, criterion="l1", groups=RESNET_SMALL_GROUPS, max_ratio=0.8, round_to=4)
    _, report = apply_plan(resnet, X, plan)
    for before, after in report.channels.values():
        assert after % 4 == 0 and after >= before * 0.2
    ranking = ChannelRanking(importances.groups, limits=removal_limits(importances.channels, (0.0, 0.8), 4))
    for name, removed in ranking.removed_channels(100).items():
        scores = importances.groups[name]
        kept = [c for c in range(len(scores)) if c not in removed]
        assert not removed or max(scores[c] for c in removed) <= min(scores[c] for c in kept)


def test_ratio_for_kept_gives_the_exact_count_the_plan_keeps():
    for channels in (3, 10, 32, 48, 100, 768):
        for kept in range(1, channels + 1):
            for round_to in (1, 8):
                want = min(max(-(-kept // round_to) * round_to, min(round_to, channels)), channels)
                assert kept_channels(channels, ratio_for_kept(channels, kept, round_to), round_to) == want


def test_a_criterion_drawing_on_the_plans_seed_is_refused(resnet):
    with pytest.raises(PruningError, match="'random'.*another criterion"):
        channel_importances(resnet, X, "random", groups=RESNET_SMALL_GROUPS)


def test_attention_heads_rank_with_the_other_groups():
    model = build_model("vit_tiny", in_channels=1, num_classes=10).eval()
    x = torch.zeros(1, 1, 16, 16)
    groups = find_groups(model, x, check=False)
    assert any(g.name.endswith("#heads") for g in groups)
    plan = global_ranking_plan(model, x, ratio=0.4, criterion="l2", groups=groups)
    _, report = apply_plan(model, x, plan)
    assert set(plan.groups) == {g.name for g in groups}
    total = sum(b for b, _ in report.channels.values())
    assert total - sum(a for _, a in report.channels.values()) == total - int(total * 0.6)


def _legr_space(resnet, **spec) -> SearchSpace:
    table = importance_table(resnet, X, RESNET_SMALL_GROUPS, ["l1", "l2"], ["layer", "group"])
    return SearchSpace(
        SpaceSpec(ratio="per_stage", criterion="shared", ratio_schedule="global_rank", **spec),
        RESNET_SMALL_GROUPS,
        (0.0, 0.9),
        ("l1", "l2"),
        scope=("layer", "group"),
        importances=table,
        macs_of=relative_macs(resnet, X),
    )


def test_the_legr_space_suggests_plans_whose_ratios_follow_one_threshold(resnet):
    space = _legr_space(resnet)
    assert space.param_names() == ["ratio", "scale:conv1", "criterion", "scale:layer1", "scale:layer2", "scale:layer3", "criteria_scope"]
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(4):
        trial = study.ask()
        plan = space.sample(trial)
        assert space.plan_from_params(trial.params) == plan and plan.scope == trial.params["criteria_scope"]
        vectors = space.importances[(trial.params["criterion"], plan.scope)].groups
        removed_top, kept_bottom = 0.0, float("inf")
        for name, entry in plan.groups.items():
            scale = trial.params[f"scale:{name.split('.')[0]}"]
            scores = sorted(scale * s for s in vectors[name])
            keep = kept_channels(len(scores), entry.ratio)
            removed_top = max([removed_top, *scores[: len(scores) - keep]])
            if keep > kept_channels(len(scores), 0.9):  # a group at its cap keeps channels above the threshold
                kept_bottom = min(kept_bottom, scores[len(scores) - keep])
        assert removed_top <= kept_bottom  # one threshold separates every removed channel from every kept one
        total = sum(len(v) for v in vectors.values())
        removed = sum(len(vectors[n]) - kept_channels(len(vectors[n]), e.ratio) for n, e in plan.groups.items())
        most = sum(len(v) - kept_channels(len(v), 0.9) for v in vectors.values())  # every group at its cap
        assert removed == min(total - int(total * (1 - trial.params["ratio"]) + 1e-9), most)
        study.tell(trial, [0.0, 1.0])


def test_the_legr_warm_start_is_plain_global_ranking_at_the_uniform_plans_macs(resnet):
    space = _legr_space(resnet, target="macs")
    baselines = space.warm_start()
    assert len(baselines) == 3 * 2  # three ratios, l1 and l2
    assert all({v for k, v in p.items() if k.startswith("scale:")} == {1.0} for p in baselines)
    assert {p["criteria_scope"] for p in baselines} == {"layer"}
    params = baselines[1]  # 0.25 with l2: the MACs of the uniform plan that removes a quarter of every group
    uniform = PruningPlan.uniform(RESNET_SMALL_GROUPS, 0.25, "l2")
    assert space.macs_of is not None and params["macs"] == space.macs_of(uniform)
    plan = space.plan_from_params(params)
    assert plan == global_ranking_plan(resnet, X, macs=params["macs"], criterion="l2", groups=RESNET_SMALL_GROUPS)


def test_the_global_rank_preset_loads_and_needs_importances():
    spec = load_space_spec("global_rank")
    assert spec.ratio_schedule == "global_rank" and spec.target == "macs" and spec.scale_range == (0.5, 2.0)
    with pytest.raises(ConfigError, match="importances"):
        SearchSpace(spec, RESNET_SMALL_GROUPS, (0.0, 0.9), ("l1",))


def test_a_searched_scope_is_recorded_in_the_plan_and_honoured(resnet):
    space = SearchSpace(load_space_spec("uniform"), RESNET_SMALL_GROUPS, (0.0, 0.9), ("l1",), scope=("layer", "group"))
    assert space.param_names() == ["ratio", "criterion", "criteria_scope"]
    plans = {s: space.plan_from_params({"ratio": 0.5, "criterion": "l1", "criteria_scope": s}) for s in ("layer", "group")}
    assert {s: p.scope for s, p in plans.items()} == {"layer": "layer", "group": "group"}
    assert space.warm_start()[0]["criteria_scope"] == "layer"
    for scope, plan in plans.items():  # each prunes by its own scope's ranking
        scores = channel_importances(resnet, X, "l1", scope, groups=["layer2.0.conv2"]).groups["layer2.0.conv2"]
        pruned, _ = apply_plan(resnet, X, PruningPlan({"layer2.0.conv2": plan.groups["layer2.0.conv2"]}, scope=scope))
        kept = sorted(range(64), key=lambda c: (scores[c], c))[32:]
        assert torch.equal(pruned.layer2[0].conv2.weight, resnet.layer2[0].conv2.weight[sorted(kept)])
    assert not torch.equal(
        apply_plan(resnet, X, plans["layer"])[0].layer2[0].conv2.weight,
        apply_plan(resnet, X, plans["group"])[0].layer2[0].conv2.weight,
    )


def test_a_global_rank_task_ranks_the_base_model_once(tmp_path):
    config = config_from_dict(
        tiny_config(
            tmp_path / "out",
            base_training={"epochs": 0},
            prune={"search_space": "global_rank", "criteria": ["l1", "l2"], "criteria_scope": ["group", "layer"]},
        )
    )
    task = prepare_task(config)
    assert set(task.space.importances) == {(c, s) for c in ("l1", "l2") for s in ("group", "layer")}
    plan = task.space.sample(optuna.create_study(directions=["maximize", "minimize"]).ask())
    assert plan.scope in ("group", "layer") and set(plan.groups) == set(RESNET_SMALL_GROUPS)


@pytest.mark.parametrize(
    "prune, key, message",
    [
        ({"criteria_scope": "layr"}, "prune.criteria_scope", "did you mean 'layer'"),
        ({"criteria_scope": ["layer", "layer"]}, "prune.criteria_scope", "once each"),
        ({"search_space": {"ratio": "per_stage", "target": "macs"}}, "prune.search_space.target", "global_rank"),
        ({"search_space": {"ratio_schedule": "global_rank", "scale_range": [2, 0.5]}}, "prune.search_space.scale_range", "reversed"),
        ({"search_space": {"ratio_schedule": "global_rank", "normalizer": "maen"}}, "prune.search_space.normalizer", "did you mean 'mean'"),
        ({"search_space": {"ratio_schedule": "global_rank", "macs_range": [0, 1]}}, "prune.search_space.macs_range", ""),
    ],
)
def test_bad_values_give_one_line_errors_naming_the_key(tmp_path, prune, key, message):
    with pytest.raises(ConfigError) as info:
        config_from_dict(tiny_config(tmp_path / "out", prune=prune))
    text = str(info.value)
    assert "\n" not in text and info.value.key is not None and info.value.key.startswith(key) and message in text


def test_a_random_criterion_in_a_global_rank_search_is_a_config_error(tmp_path):
    config = config_from_dict(
        tiny_config(tmp_path / "out", base_training={"epochs": 0}, prune={"search_space": "global_rank", "criteria": ["random"]})
    )
    with pytest.raises(ConfigError) as info:
        prepare_task(config)
    assert info.value.key == "prune.criteria" and "random" in str(info.value)
