"""Layers whose channels reach a model output are found on the traced graph and never pruned unless asked."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.cli import main
from autoprune.engine import UnsupportedGroupWarning, find_output_layers
from autoprune.errors import PruningError
from autoprune.models import build_model
from conftest import tiny_config, write_config

X = torch.randn(2, 1, 16, 16)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class HeadNet(nn.Module):
    """A classifier whose output layer is called ``head``, not ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(_conv_bn(1, 16), _conv_bn(16, 32, 2))
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(2).mean(2))


def head_net() -> nn.Module:
    torch.manual_seed(0)
    return HeadNet().eval()


class DictSegNet(nn.Module):
    """A segmenter returning ``{"out", "aux"}``, as torchvision's do: a 1x1 head upsampled, and an aux head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16, 2)
        self.body = _conv_bn(16, 32)
        self.classifier = nn.Conv2d(32, 5, 1)
        self.aux_classifier = nn.Conv2d(16, 5, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        low = self.stem(x)
        out = F.interpolate(self.classifier(self.body(low)), size=x.shape[-2:], mode="bilinear")
        return {"out": out, "aux": self.aux_classifier(low)}


class ResidualHeadNet(nn.Module):
    """Logits summed from two 1x1 heads: both heads' channels are the output's."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = _conv_bn(1, 16)
        self.body = _conv_bn(16, 32)
        self.head = nn.Conv2d(32, 4, 1)
        self.skip_head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.stem(x)
        return self.head(self.body(low)) + self.skip_head(low)


class BatchNormLastNet(nn.Module):
    """A feature extractor whose last op is a BatchNorm."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 24, 3, padding=1)
        self.bn = nn.BatchNorm2d(24)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv2(torch.relu(self.conv1(x))))


class FlattenedFeaturesNet(BatchNormLastNet):
    """Returns its last conv's feature map flattened: the channels hide in the flattened dimension."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(torch.relu(self.bn(self.conv2(torch.relu(self.conv1(x))))), 1)


class FeaturesAndLogitsNet(HeadNet):
    """Returns ``(logits, embedding)``: the embedding's channels are an output as well as the head's inputs."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x).flatten(2).mean(2)
        return self.head(embedding), embedding


class DetachedEmbeddingNet(HeadNet):
    """Returns a detached embedding: no autograd edge links it to its layers, so DepGraph cannot see it."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.features(x).flatten(2).mean(2)
        return self.head(embedding), embedding.detach()


def _shapes(out: object) -> list[tuple[int, ...]]:
    if isinstance(out, dict):
        return [tuple(t.shape) for t in out.values()]
    if isinstance(out, tuple):
        return [tuple(t.shape) for t in out]
    return [tuple(out.shape)]


def _half(model: nn.Module, groups) -> nn.Module:
    pruned, _ = apply_plan(model, X, PruningPlan.uniform(groups, 0.5, "l1"))
    return pruned


def test_a_head_the_ignore_glob_misses_is_never_pruned():
    model = head_net()
    groups = find_groups(model, X, ignore=["fc"])
    assert [g.name for g in groups] == ["features.0.0", "features.1.0"]
    assert find_output_layers(model, X) == ["head"]
    pruned = _half(model, groups)
    assert pruned.features[1][0].out_channels == 16 and pruned.head.out_features == 10
    assert pruned(X).shape == model(X).shape == (2, 10)


def test_allow_output_pruning_keeps_the_head_group_and_a_plan_may_prune_it():
    model = head_net()
    groups = find_groups(model, X, ignore=["fc"], allow_output_pruning=True)
    assert [g.name for g in groups] == ["features.0.0", "features.1.0", "head"]
    pruned, report = apply_plan(model, X, PruningPlan({"head": (0.5, "l1")}))
    assert report.channels["head"] == (10, 5) and pruned(X).shape == (2, 5)


@pytest.mark.parametrize(
    ("cls", "outputs"),
    [
        (DictSegNet, ["classifier", "aux_classifier"]),
        (ResidualHeadNet, ["head", "skip_head"]),
        (BatchNormLastNet, ["conv2"]),
        (FlattenedFeaturesNet, ["conv2"]),
        (FeaturesAndLogitsNet, ["features.1.0", "head"]),
    ],
)
def test_every_layer_whose_channels_reach_an_output_is_found_and_kept(cls, outputs):
    torch.manual_seed(0)
    model = cls().eval()
    assert find_output_layers(model, X) == outputs
    groups = find_groups(model, X)
    assert not {g.name for g in groups} & set(outputs)
    assert _shapes(_half(model, groups)(X)) == _shapes(model(X))
    every = find_groups(model, X, allow_output_pruning=True, check=False)
    assert any(g.name in outputs for g in every)  # with output pruning allowed, their groups are back


def test_deeplab_keeps_its_classes_without_an_ignore_glob():
    torch.manual_seed(0)
    model = build_model("deeplab_small", in_channels=1, num_classes=11).eval()
    groups = find_groups(model, X)
    assert find_output_layers(model, X) == ["cls_conv"]
    assert "cls_conv" not in {g.name for g in groups}
    pruned = _half(model, groups)
    assert pruned.cls_conv.out_channels == 11 and pruned(X).shape == (2, 11, 16, 16)


def test_an_output_the_graph_cannot_see_is_caught_by_the_dry_run():
    torch.manual_seed(0)
    model = DetachedEmbeddingNet().eval()
    assert find_output_layers(model, X) == ["head"]  # the detached embedding has no edge back to its layers
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(model, X)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, UnsupportedGroupWarning)]
    assert "group 'features.1.0'" in message and "changes the model's output shape from [2, 10], [2, 32]" in message
    assert [g.name for g in groups] == ["features.0.0"]


def test_a_plan_that_changes_the_output_shape_is_an_error_naming_the_group():
    torch.manual_seed(0)
    model = DetachedEmbeddingNet().eval()
    plan = PruningPlan({"features.0.0": (0.5, "l1"), "features.1.0": (0.5, "l1")})
    with pytest.raises(PruningError, match=r"group 'features.1.0' changes the model's output shape from .*\[2, 32\]"):
        apply_plan(model, X, plan)
    pruned, _ = apply_plan(model, X, PruningPlan({"features.0.0": (0.5, "l1")}))  # the other group is fine
    assert _shapes(pruned(X)) == [(2, 10), (2, 32)]


@pytest.mark.parametrize("allow", [False, True])
def test_validate_lists_the_output_layers(tmp_path, capsys, allow):
    config = tiny_config(
        tmp_path / "run",
        None,
        model={"builtin": None, "factory": "test_output_layers:head_net", "input_shape": [1, 16, 16]},
        prune={"ignore": ["fc"], "allow_output_pruning": allow},
    )
    assert main(["validate", str(write_config(tmp_path / "c.yaml", config))]) == 0
    out, err = capsys.readouterr()
    assert "glob 'fc' matches no module" in err
    if allow:
        assert "3 prunable groups: features.0.0, features.1.0, head;" in out
        assert "output layers (prunable: prune.allow_output_pruning is true): head" in out
    else:
        assert "2 prunable groups: features.0.0, features.1.0;" in out
        assert "output layers (never pruned): head" in out


def test_a_batch_of_one_is_traced_as_a_batch_not_unpacked():
    # DepGraph's own first try, model(*inputs), would run a conv-only model on the unbatched [2, 4, 4] tensor.
    from autoprune.engine import ModelGraph

    model = nn.Sequential(nn.Conv2d(2, 5, 1), nn.ReLU(), nn.Conv2d(5, 3, 1)).eval()
    assert ModelGraph(model, torch.zeros(1, 2, 4, 4)).output_shapes == [(1, 3, 4, 4)]
