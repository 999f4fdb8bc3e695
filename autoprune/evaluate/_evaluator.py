from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoprune.evaluate._train import recalibrate_bn, reseed, train
from autoprune.metrics import Metric, accuracy

__all__ = ["Evaluator", "TrainFn"]

# train_fn(model, loader, epochs=..., lr=..., momentum=..., weight_decay=..., seed=..., on_epoch=...) -> loss
TrainFn = Callable[..., float]


@dataclass(frozen=True)
class Evaluator:
    """How a candidate is trained and scored: plain callables, replaceable by the user (as NNI's evaluators)."""

    train_loader: Iterable[Any]
    val_loader: Iterable[Any]
    metric: Metric = accuracy
    train_fn: TrainFn = train
    options: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for train_fn

    def recalibrate(self, model: nn.Module, batches: int, seed: int) -> int:
        return recalibrate_bn(model, self.train_loader, batches, seed)

    def finetune(
        self,
        model: nn.Module,
        *,
        epochs: int,
        lr: float,
        momentum: float,
        weight_decay: float,
        seed: int,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> float:
        reseed(self.train_loader, seed)  # a user's train_fn gets the same pass for the same seed as ours
        return self.train_fn(
            model,
            self.train_loader,
            epochs=epochs,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            seed=seed,
            on_epoch=on_epoch,
            **self.options,
        )

    def score(self, model: nn.Module, loader: Iterable[Any] | None = None) -> float:
        model.eval()
        return float(self.metric(model, self.val_loader if loader is None else loader))
