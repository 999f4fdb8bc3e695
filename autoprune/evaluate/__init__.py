"""Recovering and scoring a pruned candidate: BN recalibration, fine-tuning, the task metric."""

from __future__ import annotations

from autoprune.evaluate._batches import fixed_batches
from autoprune.evaluate._evaluator import Evaluator, TrainFn
from autoprune.evaluate._train import recalibrate_bn, reseed, train

__all__ = ["Evaluator", "TrainFn", "fixed_batches", "recalibrate_bn", "reseed", "train"]
