"""Models users bring (factory, pickled file, torchvision), unsupported groups, and the tutorial's conv chain."""

from __future__ import annotations

import importlib.util
import warnings

import pytest
import torch
from torch import nn

import autoprune
from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.config import config_from_dict
from autoprune.engine import UnsupportedGroupWarning
from autoprune.errors import ConfigError, PruningError
from autoprune.models import build_model, load_model
from conftest import run_cli, tiny_config, write_config

X = torch.randn(2, 1, 16, 16)


class ChannelGain(nn.Module):
    """A custom layer with a per-channel gain in a buffer: torch-pruning does not know to shrink it."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("gain", torch.linspace(0.5, 1.5, channels).view(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gain


def gain_cnn() -> nn.Module:
    """conv1 feeds the custom layer (unprunable); conv2 is an ordinary group."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        ChannelGain(8),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    )


def _unsupported(caught) -> list[str]:
    return [str(w.message) for w in caught if issubclass(w.category, UnsupportedGroupWarning)]


def test_an_unprunable_group_is_left_out_with_one_warning_line_and_the_rest_carries_on():
    model = gain_cnn().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(model, X, ignore=["8"])
    (message,) = _unsupported(caught)
    assert "\n" not in message
    assert "group '0' (ChannelGain)" in message and "add '0' to prune.ignore" in message
    assert [g.name for g in groups] == ["3"]
    pruned, report = apply_plan(model, X, PruningPlan.uniform(groups, 0.5, "l1"))
    assert pruned(X).shape == (2, 10) and report.channels["3"] == (16, 8)


def test_the_suggested_ignore_glob_silences_the_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(gain_cnn(), X, ignore=["8", "0"])
    assert not _unsupported(caught) and [g.name for g in groups] == ["3"]


def test_a_model_with_no_prunable_group_is_a_clear_error():
    model = nn.Sequential(nn.Conv2d(1, 8, 3), ChannelGain(8), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedGroupWarning)
        with pytest.raises(PruningError, match="no group of Sequential can be pruned"):
            find_groups(model, X, ignore=["4"])
    with pytest.raises(PruningError, match="has no prunable group"):
        find_groups(model, X, ignore=["*"])


def test_search_logs_the_unsupported_group_and_searches_the_rest(tmp_path):
    config = tiny_config(
        tmp_path / "run",
        None,
        model={"builtin": None, "factory": "test_models_io:gain_cnn", "input_shape": [1, 16, 16], "weights": None},
        data={"builtin": "digits", "batch_size": 128, "val_fraction": 0.05},
        base_training={"epochs": 0},
        prune={"ignore": ["8"], "search_space": "per_layer", "criteria": ["l1"]},
        finetune={"epochs": 0, "bn_recalibration_batches": 1},
        study={"n_trials": 1},
    )
    logs: list[str] = []
    study = autoprune.search(config_from_dict(config), log=logs.append)
    assert [g["name"] for g in study.user_attrs["groups"]] == ["3"]
    assert sum("group '0' (ChannelGain)" in line for line in logs) == 1


def test_factory_with_a_state_dict(tmp_path):
    source = gain_cnn()
    with torch.no_grad():
        source[3].weight.mul_(3.0)
    torch.save(source.state_dict(), tmp_path / "w.pt")
    model = load_model(builtin=None, factory="test_models_io:gain_cnn", in_channels=1, num_classes=10, weights=tmp_path / "w.pt")
    assert torch.equal(model[3].weight, source[3].weight)


def test_a_pickled_module_loads_only_with_trust_pickle(tmp_path):
    source = build_model("vgg_bn", in_channels=1, num_classes=10).eval()
    torch.save(source, tmp_path / "base.pt")
    model = load_model(builtin=None, factory=None, in_channels=1, num_classes=10, file=tmp_path / "base.pt", trust_pickle=True)
    torch.testing.assert_close(model.eval()(X), source(X))
    with pytest.raises(ConfigError, match="runs code") as refused:
        load_model(builtin=None, factory=None, in_channels=1, num_classes=10, file=tmp_path / "base.pt")
    assert refused.value.key == "model.file" and "trust_pickle: true" in str(refused.value)


def test_a_search_starts_from_a_pickled_module_without_training_it(tmp_path, base_weights):
    model = build_model("resnet_small", in_channels=1, num_classes=10)
    model.load_state_dict(torch.load(base_weights, weights_only=True))
    torch.save(model, tmp_path / "base.pt")
    config = tiny_config(
        tmp_path / "run",
        None,
        model={"builtin": None, "file": str(tmp_path / "base.pt"), "trust_pickle": True, "input_shape": [1, 16, 16]},
        data={"builtin": "digits", "batch_size": 128, "val_fraction": 0.05},
        finetune={"epochs": 0, "bn_recalibration_batches": 1},
        study={"n_trials": 1},
    )
    logs: list[str] = []
    study = autoprune.search(config_from_dict(config), log=logs.append)
    assert not any("training the base model" in line for line in logs)
    assert study.user_attrs["base"]["metric"] > 0.5  # the trained weights came with the pickle


def test_config_refuses_a_pickle_without_trust_on_the_cli_in_one_line(tmp_path):
    config = tiny_config(tmp_path / "run", None, model={"builtin": None, "file": str(tmp_path / "base.pt"), "input_shape": [1, 16, 16]})
    result = run_cli("search", str(write_config(tmp_path / "c.yaml", config)))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "model.trust_pickle: true" in result.stderr and "runs code" in result.stderr
    assert not (tmp_path / "run").exists()


def test_exactly_one_model_source():
    base = {"name": "x", "output": "out"}
    with pytest.raises(ConfigError, match="exactly one of .*found builtin, torchvision"):
        config_from_dict({**base, "model": {"builtin": "vgg_bn", "torchvision": "resnet50"}})
    with pytest.raises(ConfigError, match="exactly one of"):
        config_from_dict({**base, "model": {}})


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is not None, reason="torchvision is installed")
def test_torchvision_without_the_extra_names_it():
    with pytest.raises(ConfigError, match=r"optional extra torchvision.*autoprune\[torchvision\]") as missing:
        load_model(builtin=None, factory=None, in_channels=3, num_classes=10, torchvision="resnet50")
    assert missing.value.key == "model.torchvision"


@pytest.mark.skipif(importlib.util.find_spec("torchvision") is None, reason="the torchvision extra is not installed")
def test_torchvision_builds_the_named_model():  # runs where the extra is installed
    model = load_model(builtin=None, factory=None, in_channels=3, num_classes=10, torchvision="resnet18")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


# The channel-pruning tutorial's chain: 8 convs, 3 -> 32 -> ... -> 4096, 100,658,016 parameters. A 4x4 input
# keeps the MAC count cheap; the dry run is skipped (check=False) as it would copy 400 MB once more.
CHAIN_INPUT = torch.zeros(1, 3, 4, 4)


@pytest.fixture(scope="module")
def chain():
    torch.manual_seed(0)
    model = build_model("conv_chain", in_channels=3, num_classes=4096)
    return model, find_groups(model, CHAIN_INPUT, check=False, allow_output_pruning=True)  # the tutorial halves conv8 too


def test_tutorial_chain_halved_by_l1_keeps_the_top_l1_filters(chain):
    model, groups = chain
    assert sum(p.numel() for p in model.parameters()) == 100_658_016
    assert [g.name for g in groups] == [f"conv{i}" for i in range(1, 9)]
    pruned, report = apply_plan(model, CHAIN_INPUT, PruningPlan.uniform(groups, 0.5, "l1"))
    assert report.params_before == 100_658_016 and report.params_after == 25_164_720
    kept_in = torch.arange(3)
    for i in range(1, 9):
        weight = getattr(model, f"conv{i}").weight
        kept_out = torch.sort(torch.topk(weight.abs().sum(dim=(1, 2, 3)), weight.shape[0] // 2).indices).values
        assert torch.equal(getattr(pruned, f"conv{i}").weight, weight[kept_out][:, kept_in])
        kept_in = kept_out


def test_tutorial_chain_with_the_last_layer_ignored(chain):
    model, groups = chain
    plan = PruningPlan.uniform([g for g in groups if g.name != "conv8"], 0.5, "l1")
    assert [g.name for g in find_groups(model, CHAIN_INPUT, ignore=["conv8"], check=False)] == list(plan.groups)
    pruned, report = apply_plan(model, CHAIN_INPUT, plan)
    assert report.params_after == 44_039_088 and pruned.conv8.out_channels == 4096
