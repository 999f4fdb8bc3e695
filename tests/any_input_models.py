"""Models, example inputs, data, losses and metrics of the kind a practitioner brings, importable as
``any_input_models:<name>``: a model with two inputs, and a Hugging Face ViT returning a ``ModelOutput``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SAMPLES = 96  # a few batches of digits: enough for a trial, fast


class TwoInputNet(nn.Module):
    """An image and a vector of extra features, both required: ``forward(image, extra)``."""

    def __init__(self, extra_features: int = 4) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, stride=2)
        self.extra = nn.Linear(extra_features, 8)
        self.fc = nn.Linear(16 + 8, 10)

    def forward(self, image: torch.Tensor, extra: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.bn1(self.conv1(image))))).mean(dim=(2, 3))
        return self.fc(torch.cat([x, torch.relu(self.extra(extra))], dim=1))


def two_input_net(extra_features: int = 4) -> nn.Module:
    return TwoInputNet(extra_features)


def dict_inputs(extra_features: int = 4) -> dict[str, torch.Tensor]:
    """The example inputs as keyword arguments; ``extra_features`` comes from ``model.options``."""
    return {"image": torch.zeros(1, 1, 8, 8), "extra": torch.zeros(1, extra_features)}


def tuple_inputs(extra_features: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.zeros(1, 1, 8, 8), torch.zeros(1, extra_features)


def _digits(samples: int = SAMPLES) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

    raw = load_digits()
    images = torch.tensor(raw.images[:samples], dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0
    return images, torch.tensor(raw.target[:samples], dtype=torch.long)


def _loaders(collate: Any, samples: int = SAMPLES) -> tuple[DataLoader, DataLoader]:
    images, labels = _digits(samples)
    half = samples // 2
    data = [TensorDataset(images[:half], labels[:half]), TensorDataset(images[half:], labels[half:])]
    generator = torch.Generator().manual_seed(0)
    return (
        DataLoader(data[0], batch_size=32, shuffle=True, generator=generator, collate_fn=collate),
        DataLoader(data[1], batch_size=32, collate_fn=collate),
    )


def _extra(images: torch.Tensor, features: int = 4) -> torch.Tensor:
    return images.flatten(1)[:, 24 : 24 + features]


def dict_input_data(extra_features: int = 4) -> tuple[DataLoader, DataLoader]:
    """``({"image": ..., "extra": ...}, targets)`` batches: built-in losses and metrics call ``model(**inputs)``."""

    def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        images, labels = torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
        return {"image": images, "extra": _extra(images, extra_features)}, labels

    return _loaders(collate)


def tuple_input_data() -> tuple[DataLoader, DataLoader]:
    """``((image, extra), targets)`` batches: positional inputs."""

    def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor]:
        images, labels = torch.stack([s[0] for s in samples]), torch.stack([s[1] for s in samples])
        return (images, _extra(images)), labels

    return _loaders(collate)


# A Hugging Face classifier: ModelOutput out, dict batches in (pixel_values and labels, as HF's Trainer feeds).


def tiny_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        image_size=8, patch_size=4, num_channels=1, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(config)


def pixel_values() -> dict[str, torch.Tensor]:
    return {"pixel_values": torch.zeros(1, 1, 8, 8)}


def hf_batches() -> tuple[DataLoader, DataLoader]:
    """``{"pixel_values", "labels"}`` batches: only the user's loss and metric know what to do with them."""

    def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"pixel_values": torch.stack([s[0] for s in samples]), "labels": torch.stack([s[1] for s in samples])}

    return _loaders(collate)


def hf_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The raw output: Hugging Face computes the loss itself when it is given the labels."""
    output = model(**batch)
    assert type(output).__name__ == "ImageClassifierOutput", type(output)
    return output.loss


def hf_accuracy(model: nn.Module, loader: Any) -> float:
    correct = total = 0
    with torch.no_grad():
        for batch in loader:
            logits = model(pixel_values=batch["pixel_values"]).logits
            correct += int((logits.argmax(dim=1) == batch["labels"]).sum())
            total += len(batch["labels"])
    return correct / total


# Pretrained: the factory's weights are the base model (seeded here, not by autoprune).


def pretrained_net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        return TwoInputNet()


# What goes wrong.


def not_inputs() -> str:
    return "pixels"


def no_tensor() -> dict[str, int]:
    return {"image": 3}


def broken_inputs() -> torch.Tensor:
    raise RuntimeError("no camera attached")


def wrong_keyword_inputs() -> dict[str, torch.Tensor]:
    return {"picture": torch.zeros(1, 1, 8, 8), "extra": torch.zeros(1, 4)}

