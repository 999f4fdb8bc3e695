"""``autoprune.load(out_dir)``: rebuild an exported model without unpickling any code.

The base architecture comes from the zoo or the factory named in ``architecture.json``; the plan in
``plan.json`` gives every group its channel count, traced on the example inputs saved in ``example_inputs.pt``
(zeros of ``input_shape`` for exports written before it existed); the weights come from ``weights.pt``. Every
file is read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.engine import apply_plan
from autoprune.errors import ConfigError
from autoprune.models import load_model, load_weights
from autoprune.plan import PruningPlan

__all__ = ["ARCHITECTURE_FILE", "EXAMPLE_INPUTS_FILE", "PLAN_FILE", "WEIGHTS_FILE", "load", "load_example_inputs", "shape_plan"]

ARCHITECTURE_FILE = "architecture.json"
EXAMPLE_INPUTS_FILE = "example_inputs.pt"
PLAN_FILE = "plan.json"
WEIGHTS_FILE = "weights.pt"


def shape_plan(plan: PruningPlan) -> PruningPlan:
    """The plan with every criterion replaced by ``l1``: it keeps the same channel *counts*, which is all the
    architecture needs (the weights are loaded afterwards), and loading never depends on a custom criterion
    being registered in the loading process."""
    return PruningPlan({n: (g.ratio, "l1") for n, g in plan.groups.items()}, round_to=plan.round_to, scope=plan.scope)


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"{path.name} is missing; is this an `autoprune export` folder?", key=str(path))
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path.name} is not valid JSON: {exc}", key=str(path)) from None


def load_example_inputs(out_dir: str | Path) -> Any:
    """The example inputs an export was traced on (a tensor, a tuple or a dict of tensors), on the CPU: what
    ``autoprune.engine.call_model(model, inputs)`` runs the loaded model on."""
    folder = Path(out_dir)
    path = folder / EXAMPLE_INPUTS_FILE
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # an unreadable file fails in many ways inside torch
            raise ConfigError(f"cannot load {path.name}: {exc}".splitlines()[0], key=str(path)) from None
    shape = _read_json(folder / ARCHITECTURE_FILE).get("input_shape")
    if not shape:
        raise ConfigError(f"{path.name} is missing and architecture.json gives no input_shape", key=str(folder))
    return torch.zeros(1, *shape)


def load(out_dir: str | Path, *, trust_pickle: bool = False) -> nn.Module:
    """The exported model, in eval mode, rebuilt from the base architecture, the plan and the weights.

    Only a base model that came from a whole-model pickle (``model.file``) needs that pickle again, and so
    ``trust_pickle=True``; every other source rebuilds without running pickled code.
    """
    folder = Path(out_dir)
    if not folder.is_dir():
        raise ConfigError(f"export folder {str(folder)!r} does not exist", key="out_dir")
    arch = _read_json(folder / ARCHITECTURE_FILE)
    plan = PruningPlan.from_dict(_read_json(folder / PLAN_FILE))
    if arch.get("file") and not trust_pickle:
        raise ConfigError(
            f"this export's base model came from the pickle {arch['file']!r}; rebuilding it unpickles that file, "
            "which runs code: pass trust_pickle=True if you trust it, or torch.load the exported model.pt",
            key=str(folder),
        )
    model = load_model(
        builtin=arch.get("builtin"),
        factory=arch.get("factory"),
        torchvision=arch.get("torchvision"),
        file=Path(arch["file"]) if arch.get("file") else None,
        trust_pickle=trust_pickle,
        in_channels=int(arch["in_channels"]),
        num_classes=int(arch["num_classes"]),
        options=arch.get("options") or {},
        search_paths=arch.get("factory_paths") or (),
    )
    example = load_example_inputs(folder)
    with torch.enable_grad():  # the dependency graph is traced through autograd
        pruned, report = apply_plan(model, example, shape_plan(plan))
    expected = {str(k): int(v) for k, v in arch.get("channels", {}).items()}
    found = {name: after for name, (_, after) in report.channels.items()}
    if expected and found != expected:
        diff = {n: (found.get(n), c) for n, c in expected.items() if found.get(n) != c}
        raise ConfigError(f"the plan rebuilds channels {diff} (rebuilt, exported); the export is inconsistent", key=str(folder))
    load_weights(pruned, folder / WEIGHTS_FILE, key=str(folder / WEIGHTS_FILE))
    return pruned.eval()
