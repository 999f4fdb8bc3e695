"""Every common Hugging Face family (tiny random configs, offline): a uniform 50% plan prunes heads (or head dims)
and MLP width by the expected number of parameters and keeps the output shapes; removing only dead heads leaves
the outputs unchanged; left-out heads say why; GPT-2's Conv1D and tied embeddings survive pruning."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hf_families import FAMILIES, build, inputs
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.engine import UnsupportedGroupWarning, call_model, output_tensors
from autoprune.engine._attention import find_attention_sites
from autoprune.engine._graph._conv1d import linearize_conv1d
from autoprune.plan import kept_channels

pytest.importorskip("transformers")


def _groups(name: str) -> tuple[list[str], list[str]]:
    model, x = build(name), inputs(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnsupportedGroupWarning)
        groups = [g.name for g in find_groups(model, x)]
    return groups, [str(w.message) for w in caught if issubclass(w.category, UnsupportedGroupWarning)]


def _sites(model: nn.Module) -> list:
    model = copy.deepcopy(model)
    linearize_conv1d(model)
    return find_attention_sites(model)


def _expected_removed(model: nn.Module, plan: PruningPlan) -> int:
    """Parameters a plan of heads, head dims and MLP widths removes, from the base model's shapes alone."""
    removed = 0
    for site in _sites(model):
        units, dims = site.units, site.head_dim
        if site.heads_name in plan.groups:
            units = kept_channels(site.units, plan.groups[site.heads_name].ratio, 1)
        if site.name in plan.groups:
            dims = kept_channels(site.head_dim, plan.groups[site.name].ratio, 1)
        for p in site.projections:
            before = p.parts * site.units * p.per_unit * site.head_dim
            gone = before - p.parts * units * p.per_unit * dims
            lin = p.linear
            removed += gone * (lin.in_features + (lin.bias is not None)) if p.axis == "out" else gone * lin.out_features
        table = getattr(getattr(site.owner, "relative_position_bias", None), "relative_position_bias_table", None)
        if table is not None:  # Swin: one bias column per head
            removed += (site.units - units) * table.shape[0]
    modules = dict(_linearized(model).named_modules())
    return removed + _mlp_removed(modules, plan)


def _linearized(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    linearize_conv1d(model)
    return model


_MLP: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {}


def _mlp_removed(modules: dict[str, nn.Module], plan: PruningPlan) -> int:
    removed = 0
    for group, entry in plan.groups.items():
        if group not in _MLP:
            continue
        root, outs, ins = _MLP[group]
        width = modules[group].out_features
        gone = width - kept_channels(width, entry.ratio, 1)
        for suffix in (root, *outs):
            lin = modules[group.removesuffix(root) + suffix]
            removed += gone * (lin.in_features + (lin.bias is not None))
        for suffix in ins:
            removed += gone * modules[group.removesuffix(root) + suffix].out_features
    return removed


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_half_plan_prunes_heads_and_mlp_width_by_the_expected_params_and_keeps_output_shapes(name):
    family, model, x = FAMILIES[name], build(name), inputs(name)
    groups, left_out = _groups(name)
    heads = [g for g in groups if g.endswith("#heads")]
    dims = [g for g in groups if f"{g}#heads" in groups or (not family.heads and g.endswith((".q", "q_proj")))]
    mlp = [g for g in groups if g.endswith(family.mlp)]
    assert bool(heads) is family.heads and bool(dims) is family.dims and mlp, groups
    if family.left_out:
        heads_left_out = [line for line in left_out if "#heads" in line]
        assert heads_left_out and all(family.left_out in line for line in heads_left_out), left_out
    else:
        assert not any("#heads" in line for line in left_out), left_out
    for g in mlp:
        _MLP[g] = (family.mlp, family.mlp_out, family.mlp_in)
    plan = PruningPlan({g: (0.5, "l2") for g in [*heads, *dims, *mlp]})
    pruned, report = apply_plan(model, x, plan)
    assert report.params_before - report.params_after == _expected_removed(model, plan)
    assert sum(p.numel() for p in pruned.parameters()) == report.params_after
    for site in _sites(pruned):  # every attention's own attributes now say half the heads
        if family.heads:
            assert site.heads_name in plan.groups and report.channels[site.heads_name][1] == site.units
    with torch.no_grad():
        for batch in (x, inputs(name, batch=3, length=6)):
            before, after = output_tensors(call_model(model, batch)), output_tensors(call_model(pruned, batch))
            assert [t.shape for t in after] == [t.shape for t in before]


def _zero_unit(model: nn.Module, unit: str, index: int) -> None:
    """Make head (a KV head with its query heads) or head-dim position ``index`` of every attention contribute
    nothing: zero its q, k, v rows and biases and the output projection's columns, on the model's own weights."""
    for site in find_attention_sites(model):
        for p in site.projections:
            rows = p.linear.weight if p.axis == "out" else p.linear.weight.t()
            views = [rows.reshape(p.parts, site.units, p.per_unit, site.head_dim, -1)]
            bias = getattr(p.linear, "bias", None)
            if p.axis == "out" and bias is not None:
                views.append(bias.view(p.parts, site.units, p.per_unit, site.head_dim, 1))
            with torch.no_grad():
                for v in views:
                    (v[:, index] if unit == "heads" else v[:, :, :, index]).zero_()


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_removing_only_dead_heads_leaves_the_outputs_unchanged(name):
    family, model, x = FAMILIES[name], build(name), inputs(name)
    if name == "gpt2":  # its Conv1D weights are [in, out]: zero them on the nn.Linear twin the graph prunes
        linearize_conv1d(model)
    unit = "heads" if family.heads else "dims"
    _zero_unit(model, unit, index=1)
    groups, _ = _groups(name)
    suffix = "#heads" if unit == "heads" else ""
    plan = {}
    for site in find_attention_sites(model):
        channels = site.units if unit == "heads" else site.head_dim
        if site.name + suffix in groups:
            plan[site.name + suffix] = (1 / channels, "l1")
    assert plan
    pruned, report = apply_plan(model, x, PruningPlan(plan))
    assert all(after == before - 1 for before, after in report.channels.values())
    with torch.no_grad():
        for before, after in zip(output_tensors(call_model(model, x)), output_tensors(call_model(pruned, x)), strict=True):
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_gpt2_conv1d_is_pruned_as_linear_and_the_fused_c_attn_split_by_heads():
    model, x = build("gpt2"), inputs("gpt2")
    plan = PruningPlan({"transformer.h.0.attn.c_attn#heads": (0.5, "l1"), "transformer.h.0.mlp.c_fc": (0.5, "l1")})
    pruned, _ = apply_plan(model, x, plan)
    attn = pruned.transformer.h[0].attn
    assert (attn.num_heads, attn.head_dim, attn.split_size) == (2, 8, 16)
    assert (attn.c_attn.out_features, attn.c_proj.in_features) == (48, 16)  # q, k, v of 2 heads each
    assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D"  # the base model is never changed
    # Which heads were kept, found by their q rows: k and v kept the same heads (blocked layout, read from config).
    base = model.transformer.h[0].attn.c_attn.weight.detach().t().reshape(3, 4, 8, 32)
    kept = attn.c_attn.weight.detach().reshape(3, 2, 8, 32)
    heads = [int(next(h for h in range(4) if torch.equal(base[0, h], kept[0, i]))) for i in range(2)]
    torch.testing.assert_close(kept, base[:, heads])


def test_tied_embeddings_stay_tied_when_the_hidden_size_is_pruned():
    model, x = build("gpt2"), inputs("gpt2")
    assert model.lm_head.weight is model.transformer.wte.weight
    groups, _ = _groups("gpt2")
    residual = "transformer.h.0.attn.c_proj"
    assert residual in groups
    pruned, report = apply_plan(model, x, PruningPlan({residual: (0.5, "l2")}))
    assert report.channels[residual] == (32, 16)
    assert pruned.lm_head.weight is pruned.transformer.wte.weight and pruned.lm_head.weight.shape == (64, 16)


def test_a_shared_embedding_that_two_groups_would_prune_differently_is_left_out_with_the_reason():
    _, left_out = _groups("bart")  # encoder and decoder residual streams share model.shared
    assert any("tied parameter" in line and "model.shared.weight" in line for line in left_out), left_out


@pytest.mark.parametrize("interleaved", [False, True])
def test_a_fused_projection_finds_each_heads_rows_in_its_layout(interleaved):
    from autoprune.engine._attention import Projection

    parts, heads, head_dim = 3, 4, 2
    linear = nn.Linear(1, parts * heads * head_dim, bias=False)
    with torch.no_grad():
        linear.weight.copy_(torch.arange(parts * heads * head_dim, dtype=torch.float).unsqueeze(1))  # row i holds i
    projection = Projection("qkv", linear, "out", parts=parts, interleaved=interleaved)
    # Where q, k and v of head 1 sit: blocked [q0..q3 | k0..k3 | v0..v3], interleaved [q0 k0 v0 | q1 k1 v1 | ...]
    expected = (
        [2, 3, 10, 11, 18, 19] if not interleaved else [6, 7, 8, 9, 10, 11]
    )
    assert projection.indices("heads", [1], heads, head_dim) == expected
    blocks = projection.blocks(heads, head_dim)  # [parts, heads, per_unit, head_dim, in]
    assert sorted(int(v) for v in blocks[:, 1].flatten()) == expected
