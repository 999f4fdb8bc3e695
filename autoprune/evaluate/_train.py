from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["recalibrate_bn", "reseed", "train"]

EpochHook = Callable[[int, float], None]


def reseed(loader: Iterable[Any], seed: int) -> None:
    """Make the next pass over ``loader`` depend on ``seed`` alone, not on the passes made before it.

    A shuffling DataLoader built with its own ``generator`` draws each epoch's order from that generator, whose
    state moves on with every pass: without this, a candidate's fine-tune would depend on every candidate fine-tuned
    before it in the same process. A DataLoader without one draws from torch's global generator, seeded here too.
    """
    torch.manual_seed(seed)
    generator = getattr(loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)


def train(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    epochs: int,
    lr: float,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    seed: int = 0,
    on_epoch: EpochHook | None = None,
) -> float:
    """SGD with a cosine learning-rate schedule and cross-entropy; returns the last epoch's mean loss.

    A non-finite loss raises FloatingPointError rather than training on garbage.
    """
    if epochs <= 0:
        return math.nan
    reseed(loader, seed)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    steps = epochs * max(1, _len(loader))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    criterion = nn.CrossEntropyLoss()
    mean_loss = math.nan
    for epoch in range(epochs):
        total, count = 0.0, 0
        for inputs, targets in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(inputs), targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss {loss.item()} in epoch {epoch + 1}")
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach()) * int(targets.shape[0])
            count += int(targets.shape[0])
        mean_loss = total / max(count, 1)
        if on_epoch is not None:
            on_epoch(epoch + 1, mean_loss)
    model.eval()
    return mean_loss


def _len(loader: Iterable[Any]) -> int:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return 1


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: Iterable[Any], batches: int, seed: int = 0) -> int:
    """Re-estimate BatchNorm running statistics on the first ``batches`` training batches of a pass seeded by
    ``seed`` (:func:`reseed`); returns the batches used.

    Pruning removes channels whose activations fed the next layer's statistics, so the stored running means
    and variances no longer describe the pruned network. A cumulative average (momentum None) over a few
    batches fixes that without any gradient step.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    reseed(loader, seed)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    for inputs, _ in loader:
        if used >= batches:
            break
        model(inputs)
        used += 1
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()
    return used
