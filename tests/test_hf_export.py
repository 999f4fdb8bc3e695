"""The ``hf/`` artifact: a layer-tied plan of a tiny Llama (GQA) and a tiny BERT is written with
``save_pretrained`` and reloaded by ``AutoModelFor*.from_pretrained`` in a fresh process that cannot import
autoprune, with the same outputs; a per-layer plan is refused in one line while the other artifacts are written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from hf_families import architecture, build, inputs

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.engine import UnsupportedGroupWarning, call_model
from autoprune.export import ArtifactContext, write_artifacts
from autoprune.export._artifacts import write_hf
from autoprune.space import SearchSpace, load_space_spec

pytest.importorskip("transformers")
safetensors_torch = pytest.importorskip("safetensors.torch")

# Imports transformers, torch and safetensors only; autoprune (installed in this environment) is refused by an
# import hook, and its absence from sys.modules is checked.
RELOAD = """
import importlib.abc, sys
class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "autoprune":
            raise ImportError("no autoprune here")
sys.meta_path.insert(0, Refuse())
import torch, transformers
from safetensors.torch import load_file, save_file
folder, auto = sys.argv[1], sys.argv[2]
model = getattr(transformers, auto).from_pretrained(folder + "/hf").eval()
with torch.no_grad():
    logits = model(**load_file(folder + "/x.safetensors")).logits
save_file({"logits": logits.contiguous()}, folder + "/y.safetensors")
assert "autoprune" not in sys.modules
print(type(model).__name__, model.config.to_json_string(use_diff=False).replace("\\n", " "))
"""


def _tied_plan(name: str, ratios: dict[str, float]) -> PruningPlan:
    """A plan of the layer-tied space: each tied knob (suffix match) at its ratio, every other knob at 0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedGroupWarning)  # BART's shared embedding: reported, left out
        groups = tuple(g.name for g in find_groups(build(name), inputs(name)))
    space = SearchSpace(spec=load_space_spec("tied_layers"), groups=groups, ratio=(0.0, 0.9), criteria=("l2",))
    params = space.uniform_params(0.0, "l2")
    for param in params:
        for suffix, ratio in ratios.items():
            if param.startswith("ratio:") and param.endswith(suffix):
                params[param] = ratio
    plan = space.plan_from_params(params)
    return PruningPlan({g: (e.ratio, e.criterion) for g, e in plan.groups.items() if e.ratio > 0})


def _reload_outside(folder: Path, auto: str, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, str]:
    safetensors_torch.save_file({k: v.contiguous() for k, v in x.items()}, str(folder / "x.safetensors"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-I", "-c", RELOAD, str(folder), auto], cwd=folder.parent, env=env, capture_output=True,
        text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return safetensors_torch.load_file(str(folder / "y.safetensors"))["logits"], done.stdout


def _export_hf(name: str, plan: PruningPlan, folder: Path) -> tuple[torch.nn.Module, dict]:
    model, x = build(name), inputs(name)
    pruned, report = apply_plan(model, x, plan)
    probe = inputs(name, batch=4, length=6)
    with torch.no_grad():
        expected = call_model(pruned.eval(), probe)
    channels = {n: after for n, (_, after) in report.channels.items()}
    ctx = ArtifactContext(folder, probe, expected, plan, architecture(name, channels), "off", example_inputs=x)
    return pruned, write_hf(pruned, ctx)


@pytest.mark.parametrize(
    "name, ratios, auto, config",
    [
        (
            "llama",
            {"q_proj#heads": 0.5, "mlp.gate_proj": 0.25, "self_attn.o_proj": 0.5},
            "AutoModelForCausalLM",
            {"num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 8, "intermediate_size": 48, "hidden_size": 16},
        ),
        ("bert", {"intermediate.dense": 0.5}, "AutoModelForSequenceClassification", {"intermediate_size": 32, "hidden_size": 32}),
        ("bart", {"fc1": 0.5}, "AutoModelForSeq2SeqLM", {"encoder_ffn_dim": 32, "decoder_ffn_dim": 32, "d_model": 32}),
    ],
)
def test_a_tied_plan_reloads_with_from_pretrained_without_autoprune_and_gives_the_same_outputs(
    tmp_path, name, ratios, auto, config
):
    plan = _tied_plan(name, ratios)
    assert len(plan.groups) >= 2  # both layers, tied
    pruned, record = _export_hf(name, plan, tmp_path)
    assert record["status"] == "ok", record
    assert record["auto_class"] == auto and record["max_abs_diff"] <= record["tolerance"]
    saved = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert {k: saved[k] for k in config} == config
    assert any(f.endswith(".safetensors") for f in record["files"])
    # Fresh inputs (batch 3, length 5), reloaded by the test itself in a process without autoprune.
    x = inputs(name, batch=3, length=5)
    logits, stdout = _reload_outside(tmp_path, auto, x)
    assert stdout.startswith(type(pruned).__name__)
    with torch.no_grad():
        torch.testing.assert_close(logits, pruned(**x).logits, atol=1e-5, rtol=1e-4)


def test_gqa_keeps_each_kv_head_with_its_query_heads_in_the_saved_weights(tmp_path):
    plan = _tied_plan("llama", {"q_proj#heads": 0.5})
    pruned, record = _export_hf("llama", plan, tmp_path)
    assert record["status"] == "ok", record
    weights = safetensors_torch.load_file(str(tmp_path / "hf" / "model.safetensors"))
    for i in (0, 1):
        assert weights[f"model.layers.{i}.self_attn.k_proj.weight"].shape == (8, 32)  # one KV head of 8
        assert weights[f"model.layers.{i}.self_attn.q_proj.weight"].shape == (16, 32)  # its two query heads
        torch.testing.assert_close(weights[f"model.layers.{i}.self_attn.q_proj.weight"], pruned.model.layers[i].self_attn.q_proj.weight)


def test_a_per_layer_plan_is_refused_for_hf_in_one_line_and_the_other_artifacts_are_written(tmp_path):
    name = "llama"
    model, x = build(name), inputs(name)
    plan = PruningPlan({"model.layers.0.self_attn.q_proj#heads": (0.5, "l2"), "model.layers.0.mlp.gate_proj": (0.5, "l2")})
    pruned, report = apply_plan(model, x, plan)
    probe = inputs(name, batch=4, length=6)
    with torch.no_grad():
        expected = call_model(pruned.eval(), probe)
    channels = {n: after for n, (_, after) in report.channels.items()}
    ctx = ArtifactContext(tmp_path, probe, expected, plan, architecture(name, channels), "off", example_inputs=x)
    records = write_artifacts(pruned, ctx)
    hf = records["hf"]
    assert hf["status"] == "refused" and "\n" not in hf["detail"]
    assert "different head counts" in hf["detail"] and "prune.tie: [layers]" in hf["detail"]
    assert not (tmp_path / "hf").exists()
    assert records["model.pt"]["status"] == "ok" and records["weights.pt"]["status"] == "ok"
    assert {"model.pt", "weights.pt", "plan.json"} <= {p.name for p in tmp_path.iterdir()}


def test_pruned_bert_heads_are_refused_naming_the_parameter_the_config_cannot_express(tmp_path):
    plan = _tied_plan("bert", {"query#heads": 0.5})
    _, record = _export_hf("bert", plan, tmp_path)
    assert record["status"] == "refused"
    assert "bert.encoder.layer.0.attention.self.query.weight is (16, 32)" in record["detail"]


def test_gpt2_mlp_width_round_trips_with_conv1d_restored_and_the_lm_head_tied(tmp_path):
    plan = _tied_plan("gpt2", {"mlp.c_fc": 0.5})
    _, record = _export_hf("gpt2", plan, tmp_path)
    assert record["status"] == "ok", record
    weights = safetensors_torch.load_file(str(tmp_path / "hf" / "model.safetensors"))
    assert weights["transformer.h.0.mlp.c_fc.weight"].shape == (32, 32)  # Conv1D layout: [in, out]
    assert "lm_head.weight" not in weights  # tied to the input embedding, saved once
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["n_inner"] == 32
