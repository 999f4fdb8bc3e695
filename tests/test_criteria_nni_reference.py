"""autoprune's l1 / l2 / fpgm with criteria_scope layer keep exactly the channels NNI 3.0's pruners keep.

NNI only computes masks here (``pruner.compress()``); its ModelSpeedup is never used. NNI prunes
``int(channels * sparse_ratio)`` filters per layer; autoprune is asked for the same count.
"""

from __future__ import annotations

import copy

import pytest
import torch
from nni.compression.pruning import FPGMPruner, L1NormPruner, L2NormPruner
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.plan import kept_channels

REFERENCES = {"l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner}
X = torch.randn(2, 3, 12, 12)


def conv_chain(bn: bool) -> nn.Module:
    def block(cin: int, cout: int) -> list[nn.Module]:
        norm = [nn.BatchNorm2d(cout)] if bn else []
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=not bn), *norm, nn.ReLU()]

    torch.manual_seed(1 if bn else 0)
    model = nn.Sequential(
        *block(3, 16), *block(16, 24), *block(24, 20), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(20, 18), nn.ReLU(), nn.Linear(18, 5),
    )
    if bn:  # non-trivial BN parameters, which the layer-scope criteria must not read
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                nn.init.uniform_(m.weight, 0.1, 2.0)
                nn.init.uniform_(m.bias, -1.0, 1.0)
    return model.eval()


def nni_kept(pruner_cls: type, model: nn.Module, ratio: float, head: str) -> dict[str, list[int]]:
    config_list = [{"op_types": ["Conv2d", "Linear"], "exclude_op_names": [head], "sparse_ratio": ratio}]
    _, masks = pruner_cls(copy.deepcopy(model), config_list).compress()
    return {
        name: torch.nonzero(mask["weight"].flatten(1).abs().sum(dim=1)).flatten().tolist()
        for name, mask in masks.items()
    }


@pytest.mark.parametrize("bn", [False, True], ids=["conv", "conv_bn"])
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.7])
@pytest.mark.parametrize("criterion", ["l1", "l2", "fpgm"])
def test_layer_scope_keeps_the_same_filters_as_nni(criterion, ratio, bn):
    model = conv_chain(bn)
    head = str(len(model) - 1)
    reference = nni_kept(REFERENCES[criterion], model, ratio, head)
    groups = {g.name: g for g in find_groups(model, X, ignore=[head])}
    assert set(reference) == set(groups)  # the same layers are pruned: each conv/linear root
    plan = PruningPlan({n: (1 - len(kept) / groups[n].channels, criterion) for n, kept in reference.items()})
    pruned, report = apply_plan(model, X, plan)
    pruned_modules = dict(pruned.named_modules())
    previous: list[int] | None = None  # the channels kept by the layer feeding this one
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        channels = module.weight.shape[0]
        kept = reference.get(name, list(range(channels)))
        if name in reference:
            assert kept_channels(channels, ratio) == len(kept)  # NNI's count and autoprune's agree here
            assert report.channels[name] == (channels, len(kept))
        expected = module.weight.detach()[kept]
        if previous is not None:
            expected = expected[:, previous]
        # the pruned layer holds exactly NNI's surviving filters, over the surviving inputs
        assert torch.equal(pruned_modules[name].weight.detach(), expected), name
        previous = kept
