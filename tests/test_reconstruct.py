"""Layer-wise reconstruction (``autoprune.reconstruct``): exact where an exact refit exists, lower error on held-out
batches layer by layer, dict batches on Hugging Face models, the one-shot recipe end to end, and its errors."""

from __future__ import annotations

import copy
import json

import hf_families
import optuna
import pytest
import torch
from conftest import REPO, run_cli
from torch import nn

import autoprune
from autoprune.config import config_from_dict, load_config
from autoprune.data import digits
from autoprune.engine import apply_plan, find_groups
from autoprune.errors import ConfigError, ReconstructionError
from autoprune.plan import PruningPlan

ONESHOT = REPO / "experiments" / "digits" / "oneshot.yaml"


def _halved_duplicates(weight: torch.Tensor) -> None:
    """The second half of the output channels: half of the first half's, so l2 removes exactly them and each
    removed channel is a positive multiple of a kept one (ReLU keeps that exact)."""
    half = weight.shape[0] // 2
    with torch.no_grad():
        weight[half:] = 0.5 * weight[:half]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_the_refit_is_exact_when_the_removed_channels_were_combinations_of_kept_ones(kind):
    torch.manual_seed(0)
    if kind == "linear":
        model = nn.Sequential(nn.Linear(6, 8, bias=False), nn.ReLU(), nn.Linear(8, 4))
        batches = [(torch.randn(32, 6), None) for _ in range(4)]
    else:
        model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
        batches = [(torch.randn(4, 3, 8, 8), None) for _ in range(4)]
    _halved_duplicates(model[0].weight)
    model.eval()
    example = batches[0][0][:2]
    groups = find_groups(model, example, allow_output_pruning=False)
    plan = PruningPlan({g.name: (0.5, "l2") for g in groups})
    pruned, report = apply_plan(model, example, plan)
    held_out = torch.randn(*example.shape[:1], *example.shape[1:]) if kind == "linear" else torch.randn(2, 3, 8, 8)
    before = _relative(pruned(held_out), model(held_out))
    fitted = autoprune.reconstruct(pruned, model, batches, kept=report.kept, ridge=0.0)
    after = _relative(pruned(held_out), model(held_out))
    assert before > 0.1 and after < 1e-4
    assert [f.name for f in fitted.layers] == ["2"] and fitted.layers[0].refitted
    assert fitted.layers[0].error_after < 1e-8 < fitted.layers[0].error_before


def _layer_errors(pruned: nn.Module, base: nn.Module, names: list[str], kept, batch) -> dict[str, float]:
    """Each layer's relative output error against the base layer's (on its kept outputs), on ``batch``."""
    outputs: dict[str, dict[str, torch.Tensor]] = {"pruned": {}, "base": {}}
    handles = []
    for side, model in (("pruned", pruned), ("base", base)):
        modules = dict(model.named_modules())
        for name in names:
            handles.append(modules[name].register_forward_hook(
                lambda _m, _a, out, side=side, name=name: outputs[side].__setitem__(name, out.detach())
            ))  # fmt: skip
    with torch.no_grad():
        pruned.eval()(batch)
        base.eval()(batch)
    for handle in handles:
        handle.remove()
    errors = {}
    for name in names:
        target = outputs["base"][name]
        if target.shape[1] != outputs["pruned"][name].shape[1]:
            target = target[:, list(kept[name][0])]
        errors[name] = _relative(outputs["pruned"][name], target)
    return errors


def test_sequential_reconstruction_lowers_every_refitted_layers_error_on_held_out_batches(base_weights):
    data = digits(batch_size=64, val_fraction=0.2, seed=0)
    from autoprune.models import build_model

    model = build_model("resnet_small", in_channels=1, num_classes=10)
    model.load_state_dict(torch.load(base_weights))
    model.eval()
    x = next(iter(data.val))[0]
    groups = find_groups(model, x[:2], ignore=["fc"])
    pruned, report = apply_plan(model, x[:2], PruningPlan({g.name: (0.6, "l1") for g in groups}))
    plain = copy.deepcopy(pruned)
    calibration = [batch for _, batch in zip(range(8), data.train, strict=False)]
    fitted = autoprune.reconstruct(pruned, model, calibration, kept=report.kept)
    names = [f.name for f in fitted.layers if f.refitted]
    assert len(names) >= 10 and all(f.error_after < f.error_before for f in fitted.layers)
    before = _layer_errors(plain, model, names, report.kept, x)
    after = _layer_errors(pruned, model, names, report.kept, x)
    assert all(after[n] < before[n] for n in names), {n: (before[n], after[n]) for n in names}
    assert all(not torch.equal(p, q) for p, q in [(model.fc.weight, pruned.fc.weight)])  # the base is not changed
    reloaded = build_model("resnet_small", in_channels=1, num_classes=10)
    reloaded.load_state_dict(torch.load(base_weights))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values(), strict=True))


@pytest.mark.parametrize("family", ["bert", "llama"])
def test_dict_batches_refit_a_transformers_output_and_down_projections(family):
    model = hf_families.build(family)
    example = hf_families.inputs(family)
    groups = find_groups(model, example)
    pruned, report = apply_plan(model, example, PruningPlan({g.name: (0.5, "l2") for g in groups}))
    batches = [hf_families.inputs(family, batch=4, length=8 + k) for k in range(4)]
    fitted = autoprune.reconstruct(pruned, model, batches, kept=report.kept)
    refitted = [f.name for f in fitted.layers if f.refitted]
    down = "output.dense" if family == "bert" else "mlp.down_proj"
    attention_out = "attention.output.dense" if family == "bert" else "self_attn.o_proj"
    assert any(n.endswith(down) for n in refitted) and any(n.endswith(attention_out) for n in refitted)
    assert all(f.error_after < f.error_before for f in fitted.layers if f.refitted)
    held_out = hf_families.inputs(family, batch=2, length=9)
    logits = {n: m(**held_out).logits for n, m in (("base", model), ("pruned", pruned))}
    assert torch.isfinite(logits["pruned"]).all() and logits["pruned"].shape == logits["base"].shape


def test_the_errors_are_one_line_naming_the_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    example = torch.randn(2, 6)
    pruned, report = apply_plan(model, example, PruningPlan({"0": (0.5, "l2")}))
    with pytest.raises(ReconstructionError, match="no calibration batch"):
        autoprune.reconstruct(pruned, model, [], kept=report.kept)
    nan = torch.full((4, 6), float("nan"))
    with pytest.raises(ReconstructionError, match=r"calibration activations of layer '2' hold NaN or Inf") as error:
        autoprune.reconstruct(copy.deepcopy(pruned), model, [(nan, None)], kept=report.kept)
    assert "\n" not in str(error.value)
    with pytest.raises(ReconstructionError, match=r"layer '2' needs a least-squares solve of 1 x 5 features") as error:
        autoprune.reconstruct(copy.deepcopy(pruned), model, [(example, None)], kept=report.kept, max_features=4)
    untouched = autoprune.reconstruct(copy.deepcopy(model), model, [(example, None)])
    assert untouched.layers == () and untouched.warnings == ("reconstruct: no layer lost input channels; nothing to refit",)


def test_reconstruct_batches_zero_is_a_config_error_naming_the_key(tmp_path):
    raw = load_config(ONESHOT).model_dump(mode="json")
    raw["finetune"]["reconstruct"]["batches"] = 0
    with pytest.raises(ConfigError) as error:
        config_from_dict(raw)
    assert error.value.key == "finetune.reconstruct.batches"


def _oneshot(tmp_path, base_weights, **study):
    return load_config(ONESHOT, {"output": str(tmp_path / "run"), "model.weights": str(base_weights), **study})


def test_the_one_shot_recipe_validates_and_searches_and_a_changed_reconstruct_is_refused(tmp_path, base_weights):
    text = ONESHOT.read_text().replace("output: runs/digits-oneshot", f"output: {tmp_path / 'run'}")
    path = tmp_path / "oneshot.yaml"
    path.write_text(text.replace("weights: null", f"weights: {base_weights}"))
    validated = run_cli("validate", str(path))
    assert validated.returncode == 0, validated.stderr
    config = _oneshot(tmp_path, base_weights, **{"study.n_trials": 3})
    assert config.finetune.epochs == 0 and config.finetune.reconstruct is not None
    study = autoprune.search(config)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert complete and all(t.user_attrs["reconstruct"]["refitted"] >= 10 for t in complete)
    assert all("reconstruct" in t.user_attrs["seconds"] for t in complete)
    # One-shot candidates keep most of the base's accuracy (BN recalibration alone leaves ~0.5 at these budgets).
    assert max(t.values[0] for t in complete) > 0.9
    changed = _oneshot(tmp_path, base_weights, **{"study.n_trials": 3, "finetune.reconstruct.ridge": 0.1})
    with pytest.raises(ConfigError, match="another fine-tune recipe") as error:
        autoprune.search(changed)
    assert error.value.key == "finetune.reconstruct"


def test_export_records_the_reconstruction_of_each_layer(tmp_path, base_weights):
    config = _oneshot(tmp_path, base_weights, **{"study.n_trials": 2})
    autoprune.search(config)
    out = tmp_path / "export"
    autoprune.export_model(config, autoprune.Selection("knee"), out)
    record = json.loads((out / "export.json").read_text())["recovery"]["reconstruct"]
    assert record["search"]["batches"] == config.finetune.reconstruct.batches
    layers = record["export"]["layers"]
    assert layers and all(layer["error_after"] <= layer["error_before"] for layer in layers)
    assert autoprune.load(out) is not None
