"""The built-in evaluator: one implementation of the evaluator contract (the user's and Lightning's are others).

An evaluator recovers and scores a pruned candidate with three methods:

- ``recalibrate(model, batches, seed) -> int``: BatchNorm statistics re-estimated on ``batches`` training batches
  of a pass seeded by ``seed``; returns the batches used;
- ``finetune(model, *, epochs, steps, lr, seed, on_epoch=None) -> float``: the budget (``steps`` optimizer steps
  when not None, else ``epochs`` passes), the learning rate and the seed are per call; the optimizer, the loss,
  distillation and the runtime are the evaluator's own recipe. Returns the last pass's mean loss;
- ``score(model, loader=None) -> float``: the metric, higher is better, on ``loader`` (None: the search's
  validation batches).

The model handed in is already on the runtime's device. Same model, same seed: the same result, whatever ran before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune.errors import ConfigError
from autoprune.evaluate._batches import FirstBatches, OnDevice
from autoprune.evaluate._losses import Distill, OutputsLoss, StepLoss
from autoprune.evaluate._runtime import CPU, Runtime
from autoprune.evaluate._train import recalibrate_bn, train
from autoprune.metrics import Metric, accuracy

__all__ = ["EVALUATOR_METHODS", "Evaluator", "check_evaluator"]

EVALUATOR_METHODS = ("recalibrate", "finetune", "score")


def _cross_entropy() -> StepLoss:
    return OutputsLoss(nn.CrossEntropyLoss())


@dataclass(frozen=True)
class Evaluator:
    """autoprune's own recipe: SGD or AdamW with a cosine schedule, a registered or user loss, optional
    distillation from ``teacher``, on ``runtime``'s device and precision. ``val_batches`` bounds ``score()``'s
    default validation set to its first batches (the same for every trial)."""

    train_loader: Iterable[Any]
    val_loader: Iterable[Any]
    metric: Metric = accuracy
    runtime: Runtime = CPU
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    loss: StepLoss | None = None  # (model, batch) -> loss; None: cross-entropy on (inputs, targets) batches
    distill: Distill | None = None
    teacher: nn.Module | None = None
    val_batches: int | None = None

    def __post_init__(self) -> None:
        if self.distill is not None and self.teacher is None:
            raise ValueError("Evaluator(distill=...) needs teacher=, the unpruned model")

    @property
    def step_loss(self) -> StepLoss:
        return self.loss if self.loss is not None else _cross_entropy()

    @property
    def validation(self) -> Iterable[Any]:
        """The batches ``score(model)`` reads: the validation loader, or its first ``val_batches``."""
        return self.val_loader if self.val_batches is None else FirstBatches(self.val_loader, self.val_batches)

    def recalibrate(self, model: nn.Module, batches: int, seed: int) -> int:
        loss = self.step_loss
        forward: Callable[[nn.Module, Any], Any] = getattr(loss, "forward_only", loss)
        return recalibrate_bn(model, self.train_loader, batches, seed, forward=forward, runtime=self.runtime)

    def finetune(
        self,
        model: nn.Module,
        *,
        epochs: int,
        steps: int | None = None,
        lr: float,
        seed: int,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> float:
        return train(
            model,
            self.train_loader,
            epochs=epochs,
            steps=steps,
            lr=lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            seed=seed,
            on_epoch=on_epoch,
            optimizer=self.optimizer,
            loss=self.step_loss,
            distill=self.distill,
            teacher=self.teacher,
            runtime=self.runtime,
        )

    def score(self, model: nn.Module, loader: Iterable[Any] | None = None) -> float:
        model.eval()
        batches = OnDevice(self.validation if loader is None else loader, self.runtime)
        with torch.no_grad(), self.runtime.autocast():
            return float(self.metric(model, batches))


def check_evaluator(obj: object, *, key: str = "evaluator", what: str = "the evaluator") -> object:
    """``obj`` if it has the evaluator contract's methods; else a one-line ConfigError naming the missing ones."""
    missing = [name for name in EVALUATOR_METHODS if not callable(getattr(obj, name, None))]
    if missing:
        raise ConfigError(
            f"{what} ({type(obj).__name__}) has no {', '.join(missing)}; an evaluator needs "
            "recalibrate(model, batches, seed), finetune(model, *, epochs, steps, lr, seed, on_epoch=None) "
            "and score(model, loader=None)",
            key=key,
        )
    return obj
