from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import nn

from autoprune.evaluate._losses import Distill, DistillLoss, OutputsLoss, StepLoss
from autoprune.evaluate._runtime import CPU, Runtime

__all__ = ["OPTIMIZERS", "OptimizerName", "make_optimizer", "recalibrate_bn", "reseed", "train"]

EpochHook = Callable[[int, float], None]
OptimizerName = Literal["sgd", "adamw"]
OPTIMIZERS = ("sgd", "adamw")


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


def make_optimizer(
    name: str, model: nn.Module, *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    """``sgd`` (with ``momentum``) or ``adamw`` (decoupled ``weight_decay``) over the model's parameters."""
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {', '.join(OPTIMIZERS)}")


def _len(loader: Iterable[Any]) -> int | None:
    try:
        return len(loader)  # type: ignore[arg-type]
    except TypeError:
        return None


def _step_loss(loss: StepLoss | None, distill: Distill | None, teacher: nn.Module | None) -> StepLoss:
    """``loss``, cross-entropy on ``(inputs, targets)`` batches unless given; with distillation from ``teacher``."""
    step_loss: StepLoss = loss if loss is not None else OutputsLoss(nn.CrossEntropyLoss())
    if distill is not None:
        if teacher is None:
            raise ValueError("distillation needs the teacher (the unpruned model)")
        step_loss = DistillLoss(step_loss, teacher, distill)
    return step_loss


def _train_pass(
    model: nn.Module,
    loader: Iterable[Any],
    step_loss: StepLoss,
    opt: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    epoch: int,
    limit: int | None,
) -> tuple[float, int]:
    """One pass over ``loader``, at most ``limit`` optimizer steps; returns the summed loss and the steps made."""
    running, batches = 0.0, 0
    for batch in loader:
        if limit is not None and batches >= limit:
            break
        batch = runtime.to_device(batch)
        opt.zero_grad(set_to_none=True)
        with runtime.autocast():
            value = step_loss(model, batch)
        if not torch.isfinite(value):
            raise FloatingPointError(f"non-finite training loss {value.item()} in epoch {epoch}")
        scaler.scale(value).backward()
        scaler.step(opt)
        scaler.update()
        scheduler.step()
        running += float(value.detach())
        batches += 1
    return running, batches


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
    steps: int | None = None,
    optimizer: str = "sgd",
    loss: StepLoss | None = None,
    distill: Distill | None = None,
    teacher: nn.Module | None = None,
    runtime: Runtime = CPU,
) -> float:
    """Train with a cosine learning-rate schedule; returns the last pass's mean loss.

    The budget is ``epochs`` whole passes over ``loader``, or, when ``steps`` is set, exactly ``steps`` optimizer
    steps, cycling the loader (its passes follow from ``seed``, reseeded once here). ``loss(model, batch)`` is
    cross-entropy on ``(inputs, targets)`` batches unless given; ``distill`` adds distillation from ``teacher``.
    Batches go to ``runtime``'s device, forward and loss run under its autocast, fp16 uses a gradient scaler.
    A non-finite loss raises FloatingPointError rather than training on garbage.
    """
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be at least 1, found {steps}")
    if steps is None and epochs <= 0:
        return math.nan
    step_loss = _step_loss(loss, distill, teacher)
    reseed(loader, seed)
    model.train()
    opt = make_optimizer(optimizer, model, lr=lr, momentum=momentum, weight_decay=weight_decay)
    total = steps if steps is not None else epochs * max(1, _len(loader) or 1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    scaler = runtime.grad_scaler()
    done, epoch, mean_loss = 0, 0, math.nan
    while (done < total) if steps is not None else (epoch < epochs):
        epoch += 1
        limit = total - done if steps is not None else None
        running, batches = _train_pass(model, loader, step_loss, opt, scheduler, scaler, runtime, epoch, limit)
        done += batches
        if batches == 0:
            raise ValueError("the training loader yielded no batches")
        mean_loss = running / batches
        if on_epoch is not None:
            on_epoch(epoch, mean_loss)
    model.eval()
    return mean_loss


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    loader: Iterable[Any],
    batches: int,
    seed: int = 0,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    runtime: Runtime = CPU,
) -> int:
    """Re-estimate BatchNorm running statistics on the first ``batches`` training batches of a pass seeded by
    ``seed`` (:func:`reseed`); returns the batches used.

    Pruning removes channels whose activations fed the next layer's statistics, so the stored running means
    and variances no longer describe the pruned network. A cumulative average (momentum None) over a few
    batches fixes that without any gradient step. ``forward(model, batch)`` runs the model on a batch (default:
    ``model(batch[0])``), on ``runtime``'s device and under its autocast.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or batches <= 0:
        return 0
    run = forward if forward is not None else OutputsLoss(nn.CrossEntropyLoss()).forward_only
    reseed(loader, seed)
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    used = 0
    try:
        for batch in loader:
            if used >= batches:
                break
            with runtime.autocast():
                run(model, runtime.to_device(batch))
            used += 1
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
        model.eval()
    return used
