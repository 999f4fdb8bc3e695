"""The channel-pruning tutorial's 8-conv chain (3 -> 32 -> ... -> 4096), halved by L1 as the tutorial does,
with the right filters: prints parameters and MACs (on a 1x3x4x4 input) before and after, with and without
the last layer ignored.

    PYTHONPATH=. python experiments/tutorial_chain/run.py
"""

from __future__ import annotations

import torch

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.models import build_model


def main() -> None:
    torch.manual_seed(0)
    x = torch.zeros(1, 3, 4, 4)
    model = build_model("conv_chain", in_channels=3, num_classes=4096)
    for ignore in ([], ["conv8"]):
        groups = find_groups(model, x, ignore=ignore, check=False, allow_output_pruning=not ignore)
        _, report = apply_plan(model, x, PruningPlan.uniform(groups, 0.5, "l1"))
        print(
            f"ignore={ignore}: params {report.params_before:,} -> {report.params_after:,} "
            f"({report.params_before / 1e6:.2f}M -> {report.params_after / 1e6:.2f}M), "
            f"MACs {report.macs_before:,} -> {report.macs_after:,} on 1x3x4x4"
        )


if __name__ == "__main__":
    main()
