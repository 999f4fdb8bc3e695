"""Patterns from torchvision's zoo that broke the engine, rebuilt by hand (torchvision itself is not installed
here; experiments/torchvision_zoo.py runs the real models): ShuffleNetV2's channel shuffle in torchvision's
exact form, and RegNet's grouped conv with squeeze-excitation."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.engine import UnsupportedGroupWarning
from autoprune.errors import PruningError

# -- torchvision's ShuffleNetV2 -------------------------------------------------------------------------


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    # torchvision's form: contiguous() then view, where autoprune.models' shufflenet reshapes.
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(n, c, h, w)


def _dw(channels: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(channels, channels, 3, stride, 1, bias=False, groups=channels)


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = oup // 2
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw(inp, stride), nn.BatchNorm2d(inp), nn.Conv2d(inp, half, 1, bias=False), nn.BatchNorm2d(half), nn.ReLU()
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
            _dw(half, stride),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _channel_shuffle(out, 2)


class _TorchvisionShuffleNet(nn.Module):
    """torchvision's ShuffleNetV2 at a small width: stages of 2, 3 and 2 units (the depth that breaks DepGraph)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
        stages, inp = [], 4
        for repeats, out in ((2, 8), (3, 16), (2, 32)):
            stages.append(nn.Sequential(_InvertedResidual(inp, out, 2), *(_InvertedResidual(out, out, 1) for _ in range(repeats - 1))))
            inp = out
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(inp, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage4(self.stage3(self.stage2(self.conv1(x))))
        return self.fc(self.conv5(x).mean([2, 3]))


SHUFFLE_X = torch.randn(1, 3, 16, 16)


@pytest.fixture(scope="module")
def shufflenet():
    torch.manual_seed(0)
    model = _TorchvisionShuffleNet().eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        groups = find_groups(model, SHUFFLE_X, ignore=["fc"])
    warned = {str(w.message).split("'")[1]: str(w.message) for w in caught if issubclass(w.category, UnsupportedGroupWarning)}
    return model, groups, warned


def test_torchvision_channel_shuffle_traces_and_leaves_out_only_the_groups_crossing_a_shuffle(shufflenet):
    _, groups, warned = shufflenet
    names = {g.name for g in groups}
    # Inside a branch, the 1x1 - depthwise - 1x1 channels never reach a shuffle; the stem and the last conv neither.
    assert names == {"conv1.0", "conv5.0"} | {f"stage{s}.{u}.branch2.0" for s, n in ((2, 2), (3, 3), (4, 2)) for u in range(n)}
    # Every branch output is concatenated and shuffled: each is left out, named, with the reason.
    assert {"stage2.1.branch2.5", "stage3.0.branch1.2", "stage4.1.branch2.5"} <= set(warned)
    assert all("channel shuffle" in message for message in warned.values())
    assert not names & set(warned)


def test_a_uniform_plan_on_the_torchvision_shufflenet_prunes_the_branches_exactly(shufflenet):
    model, groups, _ = shufflenet
    # Channels that carry nothing (zero weights, zero BatchNorm affine) can be removed without changing the
    # output, if and only if every coupled layer loses exactly those channels.
    dead = _with_dead_channels(model, "stage3.1.branch2", range(1, 8, 2))
    pruned, report = apply_plan(dead, SHUFFLE_X, PruningPlan({"stage3.1.branch2.0": (0.5, "l2")}))
    torch.testing.assert_close(pruned(SHUFFLE_X), dead(SHUFFLE_X))
    assert pruned.stage3[1].branch2[3].groups == 4 and report.macs_after < report.macs_before
    pruned, report = apply_plan(model, SHUFFLE_X, PruningPlan.uniform(groups, 0.5, "l2"))
    assert pruned(SHUFFLE_X).shape == (1, 10) and report.macs_after < report.macs_before


def test_a_plan_naming_a_group_that_crosses_a_shuffle_is_refused_by_name(shufflenet):
    model, _, _ = shufflenet
    with pytest.raises(PruningError, match=r"'stage2.1.branch2.5'.*channel shuffle"):
        apply_plan(model, SHUFFLE_X, PruningPlan({"stage2.1.branch2.5": (0.5, "l1")}))


def _with_dead_channels(model: nn.Module, branch: str, channels: range) -> nn.Module:
    """A copy whose ``branch``'s first 1x1 conv and depthwise conv carry zeros on ``channels``."""
    import copy

    dead = copy.deepcopy(model)
    seq = dead.get_submodule(branch)
    idx = list(channels)
    with torch.no_grad():
        for layer in (seq[0], seq[1], seq[3], seq[4]):
            layer.weight[idx] = 0
            if isinstance(layer, nn.BatchNorm2d):
                layer.bias[idx] = 0
    return dead


# -- RegNet's grouped conv with squeeze-excitation ------------------------------------------------------


class _RegNetBlock(nn.Module):
    """torchvision's ResBottleneckBlock: 1x1, grouped 3x3 (``width // group_width`` groups), SE, 1x1, residual."""

    def __init__(self, channels: int, width: int, group_width: int) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(channels, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.b = nn.Sequential(
            nn.Conv2d(width, width, 3, 1, 1, groups=width // group_width, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.se_fc1, self.se_fc2 = nn.Conv2d(width, 4, 1), nn.Conv2d(4, width, 1)
        self.c = nn.Sequential(nn.Conv2d(width, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.b(self.a(x))
        scale = torch.sigmoid(self.se_fc2(torch.relu(self.se_fc1(y.mean((2, 3), keepdim=True)))))
        return torch.relu(x + self.c(y * scale))


class _RegNetLike(nn.Module):
    def __init__(self, group_width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = _RegNetBlock(16, 4 * group_width, group_width)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.block(self.stem(x)).mean((2, 3)))


REGNET_X = torch.randn(1, 3, 16, 16)


def _regnet(group_width: int) -> nn.Module:
    torch.manual_seed(0)
    model = _RegNetLike(group_width).eval()
    with torch.no_grad():
        # The weakest channels of the 1x1 before the grouped conv all in its first parts: a per-layer ranking
        # would empty those parts and keep the last ones whole.
        rows = model.block.a[0].weight
        rows.mul_(torch.arange(1, rows.shape[0] + 1, dtype=rows.dtype).view(-1, 1, 1, 1))
    return model


def test_a_group_feeding_a_grouped_conv_loses_the_same_positions_in_every_part():
    model = _regnet(group_width=8)  # 32 channels in 4 parts of 8
    groups = find_groups(model, REGNET_X, ignore=["fc"])
    assert {"block.a.0", "block.b.0"} <= {g.name for g in groups}
    pruned, report = apply_plan(model, REGNET_X, PruningPlan.uniform(groups, 0.5, "l2"))
    assert pruned(REGNET_X).shape == (1, 10)
    pruned, report = apply_plan(model, REGNET_X, PruningPlan({"block.a.0": (0.5, "l2")}))
    conv = pruned.block.b[0]
    assert (conv.in_channels, conv.out_channels, conv.groups) == (16, 32, 4)
    assert report.channels["block.a.0"] == (32, 16)
    # The kept in-channels are the same four positions of each part, whatever part a score came from.
    kept = [i for i in range(32) if any(torch.equal(model.block.a[0].weight[i], w) for w in pruned.block.a[0].weight)]
    positions = {i % 8 for i in kept}
    assert len(kept) == 16 and len(positions) == 4 and kept == sorted(p + 8 * part for part in range(4) for p in positions)


def test_a_ratio_on_a_grouped_group_rounds_the_kept_channels_up_to_whole_parts():
    model = _regnet(group_width=8)
    pruned, report = apply_plan(model, REGNET_X, PruningPlan({"block.a.0": (0.3, "l1")}))
    assert report.channels["block.a.0"] == (32, 24)  # 22.4 kept rounds up to 6 of 8 in each of 4 parts
    assert pruned(REGNET_X).shape == (1, 10)


def test_grouped_parts_of_odd_size_pass_the_dry_run_and_apply():
    # 12 channels in 4 parts of 3: removing every other channel of the whole group empties parts unevenly, so
    # the dry run removes every other channel of each part, as apply_plan will.
    model = _regnet(group_width=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedGroupWarning)
        groups = find_groups(model, REGNET_X, ignore=["fc"])
    assert {"block.a.0", "block.b.0"} <= {g.name for g in groups}
    pruned, report = apply_plan(model, REGNET_X, PruningPlan.uniform(groups, 0.5, "l2"))
    assert report.channels["block.a.0"] == (12, 8) and pruned.block.b[0].groups == 4
    assert pruned(REGNET_X).shape == (1, 10)


# -- Swin's channel-last windows ------------------------------------------------------------------------


class _WindowMixer(nn.Module):
    """Swin's layout: linears on [batch, h, w, dim], with a window partition (view, permute, view) and back."""

    def __init__(self, dim: int = 8, hidden: int = 16, window: int = 2) -> None:
        super().__init__()
        self.window = window
        self.embed = nn.Conv2d(3, dim, 2, 2)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x).permute(0, 2, 3, 1)  # [b, h, w, c]
        b, h, w, c = x.shape
        k = self.window
        windows = x.view(b, h // k, k, w // k, k, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, k * k, c)
        windows = windows + self.fc2(torch.relu(self.fc1(windows)))
        x = windows.view(b, h // k, w // k, k, k, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head(x.mean((1, 2)))


def test_channel_last_window_partitions_map_channels_one_to_one():
    torch.manual_seed(0)
    model = _WindowMixer().eval()
    x = torch.randn(1, 3, 8, 8)
    groups = {g.name: g for g in find_groups(model, x, ignore=["head"])}
    assert groups["fc1"].channels == 16 and groups["embed"].channels == 8
    pruned, _ = apply_plan(model, x, PruningPlan.uniform(groups.values(), 0.5, "l2"))
    assert (pruned.fc1.out_features, pruned.fc2.in_features, pruned.head.in_features) == (8, 8, 4)
    assert pruned(x).shape == (1, 10)
