"""How often autoprune's l1 / l2 / fpgm (criteria_scope: layer) keep the same channels as NNI 3.0's pruners.

Runs NNI's L1NormPruner / L2NormPruner / FPGMPruner (masks only, no ModelSpeedup) on every root conv of
resnet_small, prunes each group alone with autoprune at NNI's channel count, and prints the share of groups
whose kept channels are identical, and the seconds each side spent.

    PYTHONPATH=. python experiments/nni_agreement.py
"""

from __future__ import annotations

import copy
import time

import torch
from nni.compression.pruning import FPGMPruner, L1NormPruner, L2NormPruner

from autoprune import PruningPlan, find_groups
from autoprune.engine import ModelGraph, select_removed
from autoprune.criteria import get_criterion
from autoprune.models import build_model

REFERENCES = {"l1": L1NormPruner, "l2": L2NormPruner, "fpgm": FPGMPruner}


def main() -> None:
    torch.manual_seed(0)
    model = build_model("resnet_small", in_channels=3, num_classes=10).eval()
    x = torch.zeros(1, 3, 32, 32)
    roots = [g.name for g in find_groups(model, x, ignore=["fc"])]
    graph = ModelGraph(copy.deepcopy(model), x, ignore=["fc"])
    print(f"resnet_small: {len(roots)} groups; NNI config_list selects their roots by op_names")
    print(f"{'criterion':>9} {'ratio':>5} {'same':>7} {'nni s':>7} {'autoprune s':>11}")
    for criterion, pruner_cls in REFERENCES.items():
        for ratio in (0.25, 0.5, 0.75):
            started = time.perf_counter()
            _, masks = pruner_cls(copy.deepcopy(model), [{"op_names": roots, "sparse_ratio": ratio}]).compress()
            nni_s = time.perf_counter() - started
            same, ours_s = 0, 0.0
            for name in roots:
                kept_nni = torch.nonzero(masks[name]["weight"].flatten(1).abs().sum(1)).flatten().tolist()
                started = time.perf_counter()
                tensors = graph.group_tensors(name, PruningPlan().scope)
                removed = select_removed(get_criterion(criterion)(tensors), len(kept_nni))
                ours_s += time.perf_counter() - started
                kept_ours = [i for i in range(tensors.channels) if i not in removed]
                same += kept_ours == kept_nni
            print(f"{criterion:>9} {ratio:>5.2f} {same:>3}/{len(roots):<3} {nni_s:>7.3f} {ours_s:>11.3f}")


if __name__ == "__main__":
    main()
