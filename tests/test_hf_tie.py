"""Layer-tied search (``prune.tie: [layers]``, the ``tied_layers`` preset): every repeated block of one type
shares its ratio and criterion, with the independent and global_offset schedules and the uniform warm start."""

from __future__ import annotations

import optuna
import pytest
from hf_families import build, inputs

from autoprune import apply_plan, find_groups
from autoprune.config import SpaceSpec, config_from_dict
from autoprune.errors import ConfigError
from autoprune.space import SearchSpace, apply_tie, load_space_spec, tie_summary, tied_knob

pytest.importorskip("transformers")
optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_tied_knob_replaces_every_repeated_block_index():
    assert tied_knob("model.layers.11.self_attn.q_proj#heads") == "model.layers.*.self_attn.q_proj#heads"
    assert tied_knob("swin.encoder.layers.0.blocks.1.mlp.fc1") == "swin.encoder.layers.*.blocks.*.mlp.fc1"
    assert tied_knob("layer1.0.conv1") == "layer1.*.conv1" and tied_knob("0.weight") == "*.weight"
    assert tied_knob("fc1") == "fc1"  # a digit inside a name is not a block index


def _llama_groups() -> list[str]:
    return [g.name for g in find_groups(build("llama"), inputs("llama"))]


def _space(spec: SpaceSpec, groups: list[str]) -> SearchSpace:
    return SearchSpace(spec=spec, groups=tuple(groups), ratio=(0.0, 0.8), criteria=("l1", "l2"))


@pytest.mark.parametrize("schedule", ["independent", "global_offset"])
def test_every_layer_gets_the_same_heads_and_mlp_width(schedule):
    groups = _llama_groups()
    spec = load_space_spec("tied_layers").model_copy(update={"ratio_schedule": schedule})
    space = _space(spec, groups)
    ratio_knobs = [n for n in space.param_names() if n.startswith(("ratio:", "ratio_offset:"))]
    # 2 layers x (heads, MLP) + the residual stream: 3 knobs, not 5
    assert sorted(k.split(":")[1] for k in ratio_knobs) == sorted(
        ["model.layers.*.self_attn.q_proj#heads", "model.layers.*.self_attn.o_proj", "model.layers.*.mlp.gate_proj"]
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3))
    for _ in range(3):
        plan = space.sample(study.ask())
        for kind in ("self_attn.q_proj#heads", "mlp.gate_proj"):
            layer0, layer1 = (plan.groups[f"model.layers.{i}.{kind}"] for i in (0, 1))
            assert layer0 == layer1
    model, x = build("llama"), inputs("llama")
    pruned, _ = apply_plan(model, x, plan)
    layers = pruned.model.layers
    assert layers[0].self_attn.k_proj.out_features == layers[1].self_attn.k_proj.out_features
    assert layers[0].mlp.gate_proj.out_features == layers[1].mlp.gate_proj.out_features


def test_the_uniform_warm_start_is_one_plan_per_ratio_and_criterion():
    space = _space(load_space_spec("tied_layers"), _llama_groups())
    baselines = space.warm_start()
    assert len(baselines) == 3 * 2  # 0.25 / 0.5 / 0.75 x (l1, l2)
    for params in baselines:
        plan = space.plan_from_params(params)
        assert len({entry for entry in plan.groups.values()}) == 1


def test_prune_tie_layers_ties_a_per_group_preset_and_keeps_a_shared_one():
    per_group = apply_tie(load_space_spec("per_layer"), ["layers"])
    assert (per_group.ratio, per_group.criterion) == ("tied", "tied")
    uniform = apply_tie(load_space_spec("uniform"), ["layers"])
    assert (uniform.ratio, uniform.criterion) == ("shared", "shared")
    assert apply_tie(load_space_spec("per_layer"), []).ratio == "per_group"


def test_an_unknown_tie_is_one_line_naming_the_key():
    base = {"name": "t", "output": "runs/t", "model": {"builtin": "resnet_small"}, "data": {"builtin": "digits"}}
    with pytest.raises(ConfigError) as caught:
        config_from_dict({**base, "prune": {"tie": ["layerz"]}})
    assert str(caught.value.key).startswith("prune.tie") and "\n" not in str(caught.value), str(caught.value)
    assert "layers" in str(caught.value)
    assert config_from_dict({**base, "prune": {"tie": ["layers"]}}).prune.tie == ["layers"]


def test_validate_offers_tying_on_a_transformer_and_not_on_a_cnn():
    groups = _llama_groups()
    offer = tie_summary(groups, load_space_spec("per_layer"))
    assert offer is not None and "prune.tie: [layers]" in offer and "3 ratio knobs" in offer
    assert tie_summary(groups, load_space_spec("tied_layers")) == "layers tied: 3 ratio knobs for 5 groups"
    assert tie_summary(["conv1", "layer1.0.conv1", "layer1.1.conv1"], load_space_spec("per_layer")) is None
