"""Attention adapters on real models: Hugging Face BERT, ViT and Llama (tiny configs, random init, offline),
``nn.MultiheadAttention`` and the zoo's timm-style ``vit_tiny``; dict inputs and ``ModelOutput`` outputs."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.engine import (
    AttentionAdapter,
    Projection,
    UnsupportedGroupWarning,
    call_model,
    check_ignore_globs,
    find_output_layers,
    output_tensors,
    register_attention_adapter,
)
from autoprune.models import build_model

transformers = pytest.importorskip("transformers")

TOKENS, LENGTH = 50, 8


def _bert() -> nn.Module:
    config = transformers.BertConfig(
        vocab_size=TOKENS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=16, num_labels=3,
    )  # fmt: skip
    return transformers.BertForSequenceClassification(config)


def _vit() -> nn.Module:
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, num_labels=5,
    )  # fmt: skip
    return transformers.ViTForImageClassification(config)


def _llama() -> nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=TOKENS, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=16,
    )  # fmt: skip
    return transformers.LlamaForCausalLM(config)


class MhaBlock(nn.Module):
    """A pre-norm block around ``nn.MultiheadAttention``, then a classifier on the mean token."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h = self.norm(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(dim=1))


def _inputs(family: str, batch: int = 2, length: int = LENGTH) -> object:
    generator = torch.Generator().manual_seed(batch * 100 + length)
    if family in ("bert", "llama"):
        ids = torch.randint(0, TOKENS, (batch, length), generator=generator)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)} if family == "bert" else {"input_ids": ids}
    if family == "mha":
        return torch.randn(batch, length, 8, generator=generator)
    return torch.randn(batch, 3 if family == "vit" else 1, 16, 16, generator=generator)


def _model(family: str) -> nn.Module:
    torch.manual_seed(0)
    builders = {"bert": _bert, "vit": _vit, "llama": _llama, "mha": MhaBlock}
    model = build_model("vit_tiny", in_channels=1, num_classes=10) if family == "vit_tiny" else builders[family]()
    return model.eval()


# Per family: the first layer's attention (head-dim group, or None where head dims are not sound), an MLP group,
# the output layer, and the linears holding the heads (q, k, v as out-rows, the output projection as in-columns).
FAMILIES = {
    "bert": (
        "bert.encoder.layer.0.attention.self.query", True, "bert.encoder.layer.0.intermediate.dense", "classifier",
        ["bert.encoder.layer.0.attention.self." + n for n in ("query", "key", "value")],
        "bert.encoder.layer.0.attention.output.dense",
    ),
    "vit": (
        "vit.layers.0.attention.q_proj", True, "vit.layers.0.mlp.fc1", "classifier",
        ["vit.layers.0.attention." + n for n in ("q_proj", "k_proj", "v_proj")], "vit.layers.0.attention.o_proj",
    ),
    "llama": (
        "model.layers.0.self_attn.q_proj", False, "model.layers.0.mlp.gate_proj", "lm_head",
        ["model.layers.0.self_attn." + n for n in ("q_proj", "k_proj", "v_proj")], "model.layers.0.self_attn.o_proj",
    ),
    "vit_tiny": ("blocks.0.attn.qkv", True, "blocks.0.fc1", "head", ["blocks.0.attn.qkv"], "blocks.0.attn.proj"),
}  # fmt: skip


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_heads_head_dims_and_mlp_groups_are_found_and_the_output_layer_detected(family):
    model, x = _model(family), _inputs(family)
    query, dims, mlp, output, *_ = FAMILIES[family]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedGroupWarning)  # nothing of these models is left out
        groups = {g.name: g for g in find_groups(model, x)}
    assert {query + "#heads", mlp} <= set(groups)
    assert (query in groups) is dims  # Llama: RoPE ties the head dims, so only whole KV heads are pruned
    assert groups[query + "#heads"].channels == (2 if family == "llama" else 4)
    assert not any(n.endswith((".key", ".value", ".k_proj", ".v_proj")) for n in groups)  # the adapter owns them
    assert find_output_layers(model, x)[-1] == output
    assert check_ignore_globs(model, ["*#heads", query + "#heads", "nothing#heads"]) == ["nothing#heads"]


@pytest.mark.parametrize("family", [*sorted(FAMILIES), "mha"])
def test_a_half_plan_keeps_the_output_shape_cuts_macs_and_params_and_the_model_still_runs(family):
    model, x = _model(family), _inputs(family)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedGroupWarning)
        groups = find_groups(model, x)
    pruned, report = apply_plan(model, x, PruningPlan({g.name: (0.5, "l2") for g in groups}))
    assert report.macs_after < report.macs_before and report.params_after < report.params_before
    assert all(after < before for before, after in report.channels.values())
    # Another batch size and sequence length: every attribute the forward reads was kept consistent.
    other = _inputs(family, batch=3, length=5 if family in ("bert", "llama") else LENGTH)
    with torch.no_grad():
        for inputs in (x, other):
            before, after = output_tensors(call_model(model, inputs)), output_tensors(call_model(pruned, inputs))
            assert [t.shape for t in after] == [t.shape for t in before]


def _zero_units(model: nn.Module, family: str, unit: str, index: int) -> None:
    """Make head ``index`` (in Llama a KV head with its query heads) or head-dim position ``index`` of the first
    attention contribute nothing: zero its q, k, v rows and biases and the output projection's columns."""
    _, _, _, _, head_linears, output = FAMILIES[family]
    modules = dict(model.named_modules())
    kv_heads, head_dim = (2 if family == "llama" else 4), 8

    def zero(t: torch.Tensor) -> None:  # t: [parts, heads, head_dim, ...], a view of the weights
        if unit == "dims":
            t[:, :, index].zero_()
        else:
            width = t.shape[1] // kv_heads  # the heads reading KV head `index`: 2 in Llama's q and o, else 1
            t[:, index * width : (index + 1) * width].zero_()

    with torch.no_grad():
        for name in head_linears:
            linear = modules[name]
            parts = 3 if name.endswith("qkv") else 1
            zero(linear.weight.view(parts, -1, head_dim, linear.in_features))
            if linear.bias is not None:
                zero(linear.bias.view(parts, -1, head_dim))
        out = modules[output]
        zero(out.weight.view(out.out_features, 1, -1, head_dim).permute(1, 2, 3, 0))


@pytest.mark.parametrize(
    "family, unit",
    [("bert", "heads"), ("bert", "dims"), ("vit", "heads"), ("vit", "dims"), ("llama", "heads"), ("vit_tiny", "heads")],
)
def test_removing_only_dead_heads_or_head_dims_leaves_the_outputs_unchanged(family, unit):
    model, x = _model(family), _inputs(family)
    query = FAMILIES[family][0]
    _zero_units(model, family, unit, index=1)
    name, channels = (query + "#heads", 2 if family == "llama" else 4) if unit == "heads" else (query, 8)
    pruned, report = apply_plan(model, x, PruningPlan({name: (1 / channels, "l1")}))
    assert report.channels[name] == (channels, channels - 1)
    assert report.params_after < report.params_before
    with torch.no_grad():
        for before, after in zip(
            output_tensors(call_model(model, x)), output_tensors(call_model(pruned, x)), strict=True
        ):
            torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-4)


def test_pruning_one_kv_head_removes_the_query_heads_that_share_it():
    model, x = _model("llama"), _inputs("llama")
    _zero_units(model, "llama", "heads", index=0)
    attn = model.model.layers[0].self_attn
    q_rows = attn.q_proj.weight.detach().clone()
    pruned, _ = apply_plan(model, x, PruningPlan({"model.layers.0.self_attn.q_proj#heads": (0.5, "l1")}))
    kept = pruned.model.layers[0].self_attn
    assert (kept.k_proj.out_features, kept.v_proj.out_features) == (8, 8)  # one KV head of head_dim 8
    assert (kept.q_proj.out_features, kept.o_proj.in_features) == (16, 16)  # its two query heads
    assert (kept.num_key_value_groups, kept.head_dim) == (2, 8)
    torch.testing.assert_close(kept.q_proj.weight, q_rows[16:])  # query heads 2 and 3 read KV head 1
    # The other layer is untouched: heads are counted per layer, not in the shared config.
    assert pruned.model.layers[1].self_attn.k_proj.out_features == 16


class MysteryAttention(nn.Module):
    """A head layout no adapter knows (diffusers-like ``to_q`` / ``to_k`` / ``to_v`` / ``to_out``)."""

    def __init__(self, dim: int = 32, heads: int = 4) -> None:
        super().__init__()
        self.num_heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = (f(x).reshape(b, n, self.num_heads, -1).transpose(1, 2) for f in (self.to_q, self.to_k, self.to_v))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class MysteryNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.attn = MysteryAttention()
        self.fc1, self.fc2 = nn.Linear(32, 64), nn.Linear(64, 32)
        self.head = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.embed(x)
        x = x + self.attn(x)
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return {"logits": self.head(x.mean(dim=1)), "tokens": x}


def test_a_head_layout_no_adapter_knows_is_reported_by_group_name_and_left_out():
    model, x = MysteryNet().eval(), torch.randn(2, 6, 8)
    with pytest.warns(UnsupportedGroupWarning) as caught:
        groups = {g.name for g in find_groups(model, x, allow_output_pruning=True)}
    reported = {str(w.message).split("'")[1] for w in caught if issubclass(w.category, UnsupportedGroupWarning)}
    assert reported == {"attn.to_q", "attn.to_k", "attn.to_v"}
    assert all("MysteryAttention, num_heads=4" in str(w.message) for w in caught)
    assert "fc1" in groups and not groups & reported  # the MLP is pruned, the heads are not half pruned
    assert "embed" in groups  # the residual stream through the attention's input and output is pruned


def test_multihead_attention_heads_are_reported_and_an_ignore_glob_silences_them():
    model, x = _model("mha"), _inputs("mha")
    with pytest.warns(UnsupportedGroupWarning, match=r"'attn#heads' \(MultiheadAttention heads\).*head_dim"):
        groups = {g.name for g in find_groups(model, x)}
    assert {"embed", "fc1"} <= groups and "attn#heads" not in groups
    assert check_ignore_globs(model, ["attn#heads"]) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedGroupWarning)
        assert {g.name for g in find_groups(model, x, ignore=["attn#heads"])} == groups


def test_multihead_attention_embed_dim_loses_the_same_positions_in_every_head():
    model, x = _model("mha"), _inputs("mha")
    rows = model.attn.in_proj_weight.detach().clone()  # [3 * 32, 32]: q, k, v, each 4 heads of 8
    pruned, report = apply_plan(model, x, PruningPlan({"embed": (0.3, "l2")}))  # 22.4 kept: rounds up to 24
    attn = pruned.attn
    assert report.channels["embed"] == (32, 24)
    assert (attn.embed_dim, attn.num_heads, attn.head_dim) == (24, 4, 6)
    # Which residual channels were kept, found by their weights; each head keeps the same 6 of its 8 positions.
    kept = [int((model.embed.weight == row).all(dim=1).nonzero()) for row in pruned.embed.weight]
    positions = sorted({i % 8 for i in kept})
    assert len(positions) == 6 and kept == [h * 8 + p for h in range(4) for p in positions]
    inner = [part * 32 + c for part in range(3) for c in kept]
    torch.testing.assert_close(attn.in_proj_weight, rows[inner][:, kept])


class KnownMysteryAttention(MysteryAttention):
    """The same layout, made known by a user's adapter below."""


@register_attention_adapter("test_to_qkv")
class ToQkvAttention(AttentionAdapter):
    @classmethod
    def match(cls, name, module, modules):
        if not isinstance(module, KnownMysteryAttention):
            return None
        projections = [Projection(f"{name}.{n}", getattr(module, n), "out") for n in ("to_q", "to_k", "to_v")]
        return cls(name, module, [*projections, Projection(f"{name}.to_out", module.to_out, "in")], module.num_heads, 8)

    def update_module(self, unit, removed):
        module_heads = self.units if unit == "heads" else self.owner.num_heads
        self.owner.num_heads = module_heads  # the forward views with -1, so head dims need no attribute


def test_a_registered_adapter_makes_a_new_layout_prunable():
    model = MysteryNet()
    model.attn = KnownMysteryAttention()
    model.eval()
    x = torch.randn(2, 6, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnsupportedGroupWarning)
        groups = {g.name for g in find_groups(model, x)}
    assert {"attn.to_q", "attn.to_q#heads"} <= groups and "attn.to_k" not in groups
    pruned, _ = apply_plan(model, x, PruningPlan({"attn.to_q#heads": (0.5, "l1"), "attn.to_q": (0.5, "l1")}))
    assert (pruned.attn.num_heads, pruned.attn.to_q.out_features, pruned.attn.to_out.in_features) == (2, 8, 8)
    assert pruned(x)["logits"].shape == (2, 3)


def test_a_gradient_criterion_scores_heads_from_the_same_layout_as_the_weights():
    model, x = _model("vit_tiny"), _inputs("vit_tiny")
    batches = [(x, torch.tensor([1, 2]))]
    plan = PruningPlan({"blocks.0.attn.qkv#heads": (0.5, "taylor"), "blocks.0.attn.qkv": (0.25, "taylor")})
    pruned, report = apply_plan(model, x, plan, gradient_batches=batches)
    assert report.channels == {"blocks.0.attn.qkv#heads": (4, 2), "blocks.0.attn.qkv": (16, 12)}
    assert pruned(x).shape == (2, 10) and not any(p.grad is not None for p in pruned.parameters())
