from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import yaml

from autoprune.config import SpaceSpec
from autoprune.errors import ConfigError
from autoprune.space import SearchSpace, available_presets, load_space_spec, preset_dirs

# search_spaces/ at the repository root is the presets' one source (the wheel build maps it into the package;
# .ci/wheel_check loads them from an installed wheel): read them where the package does.
PRESET_DIR = preset_dirs()[0]
ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED_PRESETS = ("uniform", "per_stage", "per_layer", "global_offset")
GROUPS = ("conv1", "layer1.0.conv1", "layer1.1.conv1", "layer2.0.conv1", "layer2.0.conv2")


@pytest.mark.parametrize("name", sorted(p.name[:-5] for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml")))
def test_every_preset_file_validates(name):
    spec = load_space_spec(name)
    assert isinstance(spec, SpaceSpec) and spec.description


def test_the_presets_have_one_source_at_the_repository_root():
    assert PRESET_DIR == ROOT / "search_spaces"
    assert not (ROOT / "autoprune" / "search_spaces").exists(), "presets are mapped into the wheel, never copied"
    assert {p.name[:-5] for p in PRESET_DIR.iterdir() if p.name.endswith(".yaml")} == set(available_presets())


def test_the_documented_presets_exist():
    assert set(DOCUMENTED_PRESETS) <= set(available_presets())


@pytest.mark.parametrize("name", DOCUMENTED_PRESETS)
def test_every_documented_preset_loads_from_the_package_resources(name):
    resource = PRESET_DIR / f"{name}.yaml"
    assert resource.is_file(), f"{name}.yaml is not package data of autoprune"
    assert load_space_spec(name) == SpaceSpec.model_validate(yaml.safe_load(resource.read_text()))


def test_a_preset_in_the_prefix_share_folder_is_found(tmp_path, monkeypatch):
    folder = tmp_path / "share" / "autoprune" / "search_spaces"
    folder.mkdir(parents=True)
    (folder / "site_wide.yaml").write_text("description: site preset\nratio: shared\ncriterion: shared\n")
    (folder / "per_layer.yaml").write_text("description: shadow\nratio: shared\ncriterion: shared\n")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert load_space_spec("site_wide").description == "site preset"
    assert load_space_spec("per_layer").description != "shadow"  # the packaged preset wins


def test_unknown_preset_suggests_the_closest(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'per_layer'"):
        load_space_spec("per_layr")


def test_a_preset_with_an_unknown_key_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("ratio: per_group\ncriterion: shared\nstage_dpth: 2\n")
    with pytest.raises(ConfigError, match="stage_dpth"):
        load_space_spec(str(path))


@pytest.mark.parametrize(
    "preset, n_params",
    [("uniform", 2), ("per_stage", 2 * 3), ("per_layer", 2 * len(GROUPS)), ("global_offset", 1 + 2 * 3)],
)
def test_each_preset_turns_a_trial_into_a_plan_over_every_group(preset, n_params):
    space = SearchSpace(load_space_spec(preset), GROUPS, (0.1, 0.6), ("l1", "fpgm"))
    study = optuna.create_study(directions=["maximize", "minimize"])
    trial = study.ask()
    plan = space.sample(trial)
    assert set(plan.groups) == set(GROUPS)
    assert len(trial.params) == n_params == len(space.param_names())
    assert all(0.1 <= g.ratio <= 0.6 and g.criterion in ("l1", "fpgm") for g in plan.groups.values())
    assert space.plan_from_params(trial.params) == plan


def test_per_stage_groups_share_their_stage_ratio():
    space = SearchSpace(load_space_spec("per_stage"), GROUPS, (0.0, 0.9), ("l2",))
    plan = space.sample(optuna.create_study(directions=["maximize", "minimize"]).ask())
    assert plan.groups["layer1.0.conv1"] == plan.groups["layer1.1.conv1"]
    assert plan.groups["layer2.0.conv1"] == plan.groups["layer2.0.conv2"]


def test_warm_start_holds_the_uniform_baselines_that_fit_the_bounds():
    space = SearchSpace(load_space_spec("per_layer"), GROUPS, (0.0, 0.6), ("l1", "l2", "fpgm"))
    params = space.warm_start()
    assert len(params) == 2 * 3  # 0.75 lies outside [0, 0.6]
    plans = [space.plan_from_params(p) for p in params]
    assert {(round(p.groups["conv1"].ratio, 2), p.groups["conv1"].criterion) for p in plans} == {
        (r, c) for r in (0.25, 0.5) for c in ("l1", "l2", "fpgm")
    }
    assert all(len({(g.ratio, g.criterion) for g in p.groups.values()}) == 1 for p in plans)
