"""Ratio schedules: one global ratio plus per-knob offsets (or a depth-wise slope), and the spread warm start."""

from __future__ import annotations

import uuid

import optuna
import pytest
import torch

from autoprune.config import SpaceSpec
from autoprune.engine import apply_plan
from autoprune.errors import ConfigError
from autoprune.models import build_model
from autoprune.space import SearchSpace, get_ratio_schedule, load_space_spec, register_ratio_schedule

from conftest import RESNET_SMALL_GROUPS

CRITERIA = ("l1", "l2", "fpgm")
SCHEDULES = [
    {"ratio": "per_stage", "criterion": "per_stage", "ratio_schedule": "global_offset"},
    {"ratio": "per_group", "criterion": "shared", "ratio_schedule": "global_offset", "ratio_spread": 0.3},
    {"ratio": "per_stage", "criterion": "shared", "ratio_schedule": "depth_linear"},
]


def _space(spec: SpaceSpec | str, ratio: tuple[float, float] = (0.0, 0.9), **kwargs) -> SearchSpace:
    spec = spec if isinstance(spec, SpaceSpec) else load_space_spec(spec)
    return SearchSpace(spec, RESNET_SMALL_GROUPS, ratio, CRITERIA, **kwargs)


@pytest.mark.parametrize("sampler", ["random", "tpe"])
@pytest.mark.parametrize("options", SCHEDULES, ids=lambda o: f"{o['ratio_schedule']}-{o['ratio']}")
def test_a_scheduled_plan_round_trips_through_plan_from_params(options, sampler):
    space = _space(SpaceSpec(**options), ratio=(0.1, 0.8), bounds={"conv1": (0.2, 0.5)})
    sampler_ = optuna.samplers.RandomSampler(seed=0) if sampler == "random" else optuna.samplers.TPESampler(
        seed=0, multivariate=True, n_startup_trials=3
    )
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler_)
    for _ in range(8):
        trial = study.ask()
        plan = space.sample(trial)
        assert space.plan_from_params(trial.params) == plan
        assert set(trial.params) == set(space.param_names())
        assert 0.2 <= plan.groups["conv1"].ratio <= 0.5
        assert all(0.1 <= g.ratio <= 0.8 and g.criterion in CRITERIA for g in plan.groups.values())
        study.tell(trial, [-sum(g.ratio for g in plan.groups.values()), 1.0])


def test_the_top_global_ratio_reaches_under_ten_percent_of_the_macs_whatever_the_offsets():
    model = build_model("resnet_small", in_channels=1, num_classes=10)
    x = torch.zeros(1, 1, 16, 16)
    space = _space("global_offset")
    macs = {}
    for offset in (-space.spec.ratio_spread, 0.0, space.spec.ratio_spread):
        params = {**space.uniform_params(0.9, "l1"), **{n: offset for n in space.param_names() if "offset" in n}}
        macs[offset] = apply_plan(model, x, space.plan_from_params(params))[1].macs_ratio
    assert max(macs.values()) < 0.10 and macs[0.0] < 0.02, macs


def test_offsets_shape_the_ratios_around_the_global_one_and_clip_into_the_bounds():
    space = _space(SpaceSpec(ratio="per_stage", criterion="shared", ratio_schedule="global_offset"))
    params = {**space.uniform_params(0.8, "l2"), "ratio_offset:conv1": -0.2, "ratio_offset:layer3": 0.2}
    plan = space.plan_from_params(params)
    assert plan.groups["conv1"].ratio == pytest.approx(0.6)
    assert plan.groups["layer2.0.conv1"].ratio == pytest.approx(0.8)
    assert plan.groups["layer3.1.conv1"].ratio == 0.9  # 1.0 clipped to the upper bound


def test_depth_linear_ratios_rise_with_depth_for_a_positive_slope():
    space = _space(SpaceSpec(ratio="per_stage", criterion="shared", ratio_schedule="depth_linear", ratio_spread=0.3))
    assert space.param_names() == ["ratio", "ratio_slope", "criterion"]
    plan = space.plan_from_params({"ratio": 0.5, "ratio_slope": 0.3, "criterion": "fpgm"})
    by_stage = [plan.groups[g].ratio for g in ("conv1", "layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1")]
    assert by_stage == pytest.approx([0.2, 0.4, 0.6, 0.8])


def test_the_warm_start_of_a_schedule_is_the_uniform_plans_at_the_spread_ratios():
    space = _space("global_offset")
    plans = [space.plan_from_params(p) for p in space.warm_start()]
    assert [sorted({(g.ratio, g.criterion) for g in p.groups.values()}) for p in plans] == [
        [(r, c)] for r, c in zip(space.spec.warm_start_ratios, space.spec.warm_start_criteria * 3)
    ]


def test_warm_start_ratios_and_criteria_are_options_of_the_spec():
    spec = SpaceSpec(ratio="per_group", criterion="per_group", warm_start_ratios=[0.1, 0.9], warm_start_criteria=["l2"])
    plans = [_space(spec).plan_from_params(p) for p in _space(spec).warm_start()]
    assert [{(g.ratio, g.criterion) for g in p.groups.values()} for p in plans] == [{(0.1, "l2")}, {(0.9, "l2")}]


def test_an_unknown_ratio_schedule_is_a_config_error_naming_the_key_and_the_choices(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("ratio: per_stage\ncriterion: per_stage\nratio_schedule: global_offst\n")
    spec = load_space_spec(str(path))  # a name: whether it is registered is the space's to say
    with pytest.raises(ConfigError, match=r"prune.search_space.*unknown ratio schedule 'global_offst'.*global_offset"):
        get_ratio_schedule(spec)


def test_a_registered_ratio_schedule_is_sampled_like_the_builtin_ones():
    """A user's schedule: one knob per stage, each group's ratio half of it."""
    name = f"halved_{uuid.uuid4().hex[:6]}"

    @register_ratio_schedule(name)
    class Halved:
        needs_importances = False

        def check(self, space):
            return None

        def global_distributions(self, space):
            return {}

        def group_distribution(self, space, group):
            return f"stage:{space.knob(group)}", ("float", 0.0, 0.8)

        def entries(self, space, params):
            return {g: (params[f"stage:{space.knob(g)}"] / 2, space.criterion_of(g, params)) for g in space.groups}

        def uniform_value(self, space, name, ratio, criterion):
            return None

    assert isinstance(get_ratio_schedule(SpaceSpec(ratio_schedule=name)), Halved)
    spec = SpaceSpec(ratio="per_stage", criterion="shared", ratio_schedule=name)
    space = _space(spec)
    plan = space.sample(optuna.create_study().ask())
    knobs = {n: v for n, v in space.distributions().items() if n.startswith("stage:")}
    assert knobs and all(d == ("float", 0.0, 0.8) for d in knobs.values())
    for group, entry in plan.groups.items():
        assert entry.ratio <= 0.4
    assert len({e.ratio for e in plan.groups.values()}) == len(knobs)  # one ratio per stage


@pytest.mark.parametrize(
    "options, match",
    [
        ({"ratio": "shared", "ratio_schedule": "global_offset"}, "ratio_schedule 'global_offset' shapes ratios"),
        ({"ratio": "per_stage", "ratio_schedule": "depth_linear", "ratio_spread": 1.5}, "ratio_spread"),
        ({"warm_start_criteria": ["l3"]}, "unknown criterion 'l3'"),
        ({"warm_start_ratios": [0.5, 1.0]}, "warm_start_ratios"),
    ],
)
def test_bad_schedule_options_are_config_errors(tmp_path, options, match):
    import yaml

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(options))
    with pytest.raises(ConfigError, match=match):
        load_space_spec(str(path))
