"""A text task built offline: short "reviews" of word tokens whose label is their overall polarity.

Each sentence mixes neutral words with two to five positive and negative ones; ``not`` before a polar word (one
in ten) flips it.
The label is 1 when the flipped polar words lean positive, else 0 (ties are never drawn). Order matters only
through the negations, so a bag of words gets most of it and attention the rest. Deterministic from ``seed``.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["LENGTH", "VOCAB", "loaders", "make_split"]

PAD, CLS, SEP, NOT = 0, 1, 2, 3
POSITIVE = range(4, 24)
NEGATIVE = range(24, 44)
NEUTRAL = range(44, 100)
VOCAB = 100
LENGTH = 16


def make_split(samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``samples`` sentences as token ids ``[samples, LENGTH]`` (CLS ... SEP) and their labels."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((samples, LENGTH), PAD, dtype=torch.long)
    labels = torch.zeros(samples, dtype=torch.long)
    for row in range(samples):
        while True:
            words = [int(NEUTRAL[int(i)]) for i in torch.randint(len(NEUTRAL), (LENGTH - 2,), generator=g)]
            polar = torch.randperm(LENGTH - 3, generator=g)[: int(torch.randint(2, 6, (1,), generator=g))] + 1
            score = 0
            for at in polar.tolist():
                positive = bool(torch.rand(1, generator=g) < 0.5)
                pool = POSITIVE if positive else NEGATIVE
                words[at] = int(pool[int(torch.randint(len(pool), (1,), generator=g))])
                negated = bool(torch.rand(1, generator=g) < 0.1) and words[at - 1] not in (*POSITIVE, *NEGATIVE)
                if negated:
                    words[at - 1] = NOT
                score += (1 if positive else -1) * (-1 if negated else 1)
            if score != 0:
                break
        ids[row] = torch.tensor([CLS, *words, SEP])
        labels[row] = int(score > 0)
    return ids, labels


class Reviews(Dataset):
    """``{"input_ids", "attention_mask", "labels"}`` samples: Hugging Face's batch convention."""

    def __init__(self, samples: int, seed: int) -> None:
        self.ids, self.labels = make_split(samples, seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": (ids != PAD).long(), "labels": self.labels[i]}


def loaders(train: int = 1200, val: int = 300, test: int = 300, batch_size: int = 50) -> tuple[DataLoader, ...]:
    """The data factory: ``(train, val, test)`` loaders of dict batches (``data.options`` set the sizes)."""
    g = torch.Generator().manual_seed(0)
    return (
        DataLoader(Reviews(train, 1), batch_size=batch_size, shuffle=True, generator=g),
        DataLoader(Reviews(val, 2), batch_size=batch_size),
        DataLoader(Reviews(test, 3), batch_size=batch_size),
    )
