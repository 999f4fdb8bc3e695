"""Every zoo model survives the export round trip: pruned, written, reloaded, and the same outputs."""

from __future__ import annotations

import random

import pytest
import torch

import autoprune
from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.export._artifacts import ArtifactContext, write_artifacts
from test_zoo import ZOO, X, _build


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_reloads_after_export(tmp_path, name):
    model = _build(name)
    groups = find_groups(model, X, ignore=[ZOO[name][0]])
    rng = random.Random(1)
    plan = PruningPlan({g.name: (rng.choice([0.25, 0.5]), "l1") for g in groups})
    pruned, report = apply_plan(model, X, plan)
    pruned.eval()
    with torch.no_grad():
        expected = pruned(X)
    architecture = {
        "builtin": name,
        "factory": None,
        "torchvision": None,
        "file": None,
        "in_channels": 1,
        "num_classes": ZOO[name][1],
        "input_shape": [1, 16, 16],
        "channels": {n: after for n, (_, after) in report.channels.items()},
    }
    ctx = ArtifactContext(tmp_path, X, expected, plan, architecture, "off")
    records = write_artifacts(pruned, ctx)  # each artifact is reloaded and checked against `expected`
    assert {"model.pt", "weights.pt"} <= {p.name for p in tmp_path.iterdir()}
    assert records
    reloaded = autoprune.load(tmp_path)
    with torch.no_grad():
        assert torch.allclose(reloaded(X), expected, atol=1e-5)
    assert sum(p.numel() for p in reloaded.parameters()) == report.params_after
