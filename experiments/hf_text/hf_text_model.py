"""A small BERT-style classifier (transformers' ``BertForSequenceClassification``) built from a config: nothing
is downloaded, the weights start random and autoprune trains the base model here."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["build", "example_inputs"]


def build(hidden_size: int = 64, num_hidden_layers: int = 2, num_attention_heads: int = 4,
          intermediate_size: int = 256, vocab_size: int = 100, max_length: int = 16) -> nn.Module:  # fmt: skip
    """The model factory: keyword arguments come from ``model.options``."""
    from transformers import BertConfig, BertForSequenceClassification  # the extra: pip install 'autoprune[hf]'

    config = BertConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, intermediate_size=intermediate_size,
        max_position_embeddings=max_length, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def example_inputs(max_length: int = 16) -> dict[str, torch.Tensor]:
    """What the model is traced on: one sentence's ids and mask (keyword arguments of the forward)."""
    ids = torch.ones(1, max_length, dtype=torch.long)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
