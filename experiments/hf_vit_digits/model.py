"""A Hugging Face ``ViTForImageClassification`` for the bundled digits (8x8 grayscale), built from a tiny config.

Nothing is downloaded: the config is written here and the weights start random, so autoprune trains the base
model (``model.pretrained: false``). A pretrained checkpoint would be ``ViTForImageClassification.from_pretrained``
in the factory, with ``model.pretrained: true``.
"""

from __future__ import annotations

from torch import nn

__all__ = ["build"]


def build(
    image_size: int = 8,
    patch_size: int = 4,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    intermediate_size: int = 128,
    num_labels: int = 10,
) -> nn.Module:
    """The model factory: keyword arguments come from ``model.options``."""
    from transformers import ViTConfig, ViTForImageClassification  # the optional extra: pip install 'autoprune[hf]'

    config = ViTConfig(
        image_size=image_size,
        patch_size=patch_size,
        num_channels=1,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)
