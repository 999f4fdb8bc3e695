"""Which pruned shapes each family's config can hold: a layer-tied plan's config is derived and checked by
building the model from it (meta device, no subprocess), per family; what a config cannot express is refused in
one line. The full save_pretrained round trip is in test_hf_export.py."""

from __future__ import annotations

import copy
import warnings

import pytest
from hf_families import FAMILIES, build, inputs

from autoprune import PruningPlan, apply_plan, find_groups
from autoprune.engine import UnsupportedGroupWarning
from autoprune.export._hf import restore_conv1d
from autoprune.export._hf_config import HfShapeError, derive_hf_config

pytest.importorskip("transformers")

# family -> (group suffixes pruned at 0.5 in every layer, config values expected after)
EXPRESSIBLE = {
    "bert": (["intermediate.dense"], {"intermediate_size": 32}),
    "roberta": (["intermediate.dense"], {"intermediate_size": 32}),
    "electra": (["intermediate.dense"], {"intermediate_size": 32}),
    "distilbert": (["ffn.lin1"], {"hidden_dim": 32}),
    "albert": (["ffn"], {"intermediate_size": 32}),
    "gpt2": (["mlp.c_fc"], {"n_inner": 32}),
    "gptj": (["mlp.fc_in"], {"n_inner": 32}),
    "llama": (["q_proj#heads", "mlp.gate_proj", "self_attn.o_proj"],
              {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 32, "hidden_size": 16}),
    "mistral": (["q_proj#heads", "mlp.gate_proj"], {"num_attention_heads": 2, "num_key_value_heads": 1}),
    "qwen2": (["q_proj#heads", "mlp.gate_proj"], {"num_attention_heads": 2, "intermediate_size": 32}),
    "gemma": (["q_proj#heads", "mlp.gate_proj"], {"num_key_value_heads": 1, "intermediate_size": 32}),
    "t5": (["SelfAttention.q", "EncDecAttention.q", "DenseReluDense.wi"], {"d_kv": 4, "d_ff": 32}),
    "vit": (["mlp.fc1"], {"intermediate_size": 32}),
    "deit": (["mlp.fc1"], {"intermediate_size": 32}),
    "clip_text": (["mlp.fc1"], {"intermediate_size": 32}),
    "clip_vision": (["mlp.fc1"], {"intermediate_size": 32}),
    "bart": (["fc1"], {"encoder_ffn_dim": 32, "decoder_ffn_dim": 32}),  # per stack: encoder, decoder
    "whisper": (["fc1"], {"encoder_ffn_dim": 32}),  # the audio classifier has the encoder alone
}  # fmt: skip
# family -> (suffixes pruned, what the one-line refusal says)
REFUSED = {
    "bert": (["query#heads"], "attention.self.query.weight is (16, 32)"),
    "gpt2": (["c_attn#heads"], "c_attn.weight is (32, 48)"),
    "vit": (["q_proj"], "q_proj.weight is (16, 32)"),
    "bart": (["q_proj#heads"], "model.encoder.layers.0.self_attn.k_proj.weight is (16, 32)"),
    "swin": (["mlp.fc1"], "no config rule for model_type 'swin'"),
}


def _derive(name: str, suffixes: list[str]) -> object:
    model, x = build(name), inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnsupportedGroupWarning)  # T5's heads, BART's shared embedding: reported
        groups = [g.name for g in find_groups(model, x)]
    chosen = {g: (0.5, "l2") for g in groups if g.endswith(tuple(suffixes))}
    assert chosen, groups
    pruned, _ = apply_plan(model, x, PruningPlan(chosen))
    saved = copy.deepcopy(pruned)
    restore_conv1d(saved)
    return derive_hf_config(pruned, saved)


@pytest.mark.parametrize("name", sorted(EXPRESSIBLE))
def test_a_tied_plan_has_a_config_that_builds_the_pruned_shapes(name):
    suffixes, expected = EXPRESSIBLE[name]
    config = _derive(name, suffixes)
    assert {k: getattr(config, k) for k in expected} == expected


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_what_a_config_cannot_express_is_refused_in_one_line(name):
    suffixes, says = REFUSED[name]
    with pytest.raises(HfShapeError) as caught:
        _derive(name, suffixes)
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_every_family_is_either_expressible_or_refused():
    assert set(FAMILIES) <= set(EXPRESSIBLE) | set(REFUSED)
