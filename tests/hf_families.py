"""Tiny Hugging Face models of every common family, random init, built offline from configs (2 layers, width 32),
with example inputs and the names the tests check: the MLP's first linear (the group's root), the other linears
whose outputs are MLP width, and those reading it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

VOCAB = 64


@dataclass(frozen=True)
class Family:
    build: Callable[[Any], nn.Module]  # transformers -> model
    inputs: str  # "text", "causal", "seq2seq", "image", "image32", "audio"
    mlp: str  # suffix of the MLP groups' root
    mlp_out: tuple[str, ...] = ()  # sibling suffixes that lose the same output rows (a gate's up projection)
    mlp_in: tuple[str, ...] = ()  # sibling suffixes that lose the same input columns
    heads: bool = True  # whole heads pruned (else left out, with `left_out` in the reason)
    dims: bool = True  # head dims pruned
    left_out: str = ""



_BERT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=24, num_labels=3)  # fmt: skip
_DECODER = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=64, max_position_embeddings=24, head_dim=8)  # fmt: skip
_ENC_DEC = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, decoder_start_token_id=1)  # fmt: skip
_VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=16,
               patch_size=4)  # fmt: skip

FAMILIES: dict[str, Family] = {
    "bert": Family(lambda t: t.BertForSequenceClassification(t.BertConfig(**_BERT)), "text", "intermediate.dense",
                   mlp_in=("output.dense",)),
    "roberta": Family(lambda t: t.RobertaForSequenceClassification(t.RobertaConfig(**_BERT, pad_token_id=1)), "text",
                      "intermediate.dense", mlp_in=("output.dense",)),
    "distilbert": Family(lambda t: t.DistilBertForSequenceClassification(t.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=24, num_labels=3)),
        "text", "ffn.lin1", mlp_in=("ffn.lin2",)),
    "albert": Family(lambda t: t.AlbertForSequenceClassification(t.AlbertConfig(**_BERT, embedding_size=16)), "text",
                     "ffn", mlp_in=("ffn_output",)),
    "electra": Family(lambda t: t.ElectraForSequenceClassification(t.ElectraConfig(**_BERT, embedding_size=16)),
                      "text", "intermediate.dense", mlp_in=("output.dense",)),
    "gpt2": Family(lambda t: t.GPT2LMHeadModel(t.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=24, bos_token_id=1, eos_token_id=2)),
        "causal", "mlp.c_fc", mlp_in=("mlp.c_proj",)),
    "gptj": Family(lambda t: t.GPTJForCausalLM(t.GPTJConfig(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64, n_positions=24, rotary_dim=4, bos_token_id=1,
        eos_token_id=2)), "causal", "mlp.fc_in", mlp_in=("mlp.fc_out",), dims=False),
    "llama": Family(lambda t: t.LlamaForCausalLM(t.LlamaConfig(**_DECODER)), "causal", "mlp.gate_proj",
                    mlp_out=("mlp.up_proj",), mlp_in=("mlp.down_proj",), dims=False),
    "mistral": Family(lambda t: t.MistralForCausalLM(t.MistralConfig(**_DECODER)), "causal", "mlp.gate_proj",
                      mlp_out=("mlp.up_proj",), mlp_in=("mlp.down_proj",), dims=False),
    "qwen2": Family(lambda t: t.Qwen2ForCausalLM(t.Qwen2Config(**_DECODER)), "causal", "mlp.gate_proj",
                    mlp_out=("mlp.up_proj",), mlp_in=("mlp.down_proj",), dims=False),
    "gemma": Family(lambda t: t.GemmaForCausalLM(t.GemmaConfig(**_DECODER)), "causal", "mlp.gate_proj",
                    mlp_out=("mlp.up_proj",), mlp_in=("mlp.down_proj",), dims=False),
    "t5": Family(lambda t: t.T5ForConditionalGeneration(t.T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0)),
        "seq2seq", "DenseReluDense.wi", mlp_in=("DenseReluDense.wo",), heads=False, left_out="relative position bias"),
    "bart": Family(lambda t: t.BartForConditionalGeneration(t.BartConfig(**_ENC_DEC, max_position_embeddings=24)),
                   "seq2seq", "fc1", mlp_in=("fc2",)),
    "vit": Family(lambda t: t.ViTForImageClassification(t.ViTConfig(**_VISION, num_labels=5)), "image", "mlp.fc1",
                  mlp_in=("mlp.fc2",)),
    "deit": Family(lambda t: t.DeiTForImageClassification(t.DeiTConfig(**_VISION, num_labels=5)), "image",
                   "mlp.fc1", mlp_in=("mlp.fc2",)),
    "clip_text": Family(lambda t: t.CLIPTextModel(t.CLIPTextConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=24, bos_token_id=1, eos_token_id=2, pad_token_id=0)), "causal", "mlp.fc1",
        mlp_in=("mlp.fc2",)),
    "clip_vision": Family(lambda t: t.CLIPVisionModel(t.CLIPVisionConfig(**_VISION)), "image", "mlp.fc1",
                          mlp_in=("mlp.fc2",)),
    "swin": Family(lambda t: t.SwinForImageClassification(t.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, num_labels=5)),
        "image32", "mlp.fc1", mlp_in=("mlp.fc2",)),
    "whisper": Family(lambda t: t.WhisperForAudioClassification(t.WhisperConfig(
        **_ENC_DEC, num_mel_bins=8, max_source_positions=8, max_target_positions=24, num_labels=3)),
        "audio", "fc1", mlp_in=("fc2",)),
}  # fmt: skip


def build(name: str) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    return FAMILIES[name].build(transformers).eval()


def inputs(name: str, batch: int = 2, length: int = 8) -> dict[str, torch.Tensor]:
    kind = FAMILIES[name].inputs
    g = torch.Generator().manual_seed(batch * 100 + length)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    if kind == "text":
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    if kind == "causal":
        return {"input_ids": ids}
    if kind == "seq2seq":
        return {"input_ids": ids, "decoder_input_ids": ids[:, : max(2, length // 2)]}
    if kind == "audio":
        return {"input_features": torch.randn(batch, 8, 16, generator=g)}
    size = 32 if kind == "image32" else 16
    return {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}


def hf_model(family: str = "llama") -> nn.Module:
    """A factory (``model.factory: hf_families:hf_model``) for configs and ``autoprune.load``."""
    return build(family)


def architecture(family: str, channels: dict[str, int]) -> dict[str, Any]:
    """What an export's ``architecture.json`` holds for a tiny family built by :func:`hf_model`."""
    from pathlib import Path

    return {
        "builtin": None, "factory": "hf_families:hf_model", "options": {"family": family}, "torchvision": None,
        "file": None, "factory_paths": [str(Path(__file__).resolve().parent)], "in_channels": 0, "num_classes": 0,
        "input_shape": None, "channels": channels,
    }  # fmt: skip
