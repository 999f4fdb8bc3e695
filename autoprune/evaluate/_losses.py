"""Training losses: registered names or a user's ``"pkg.module:fn"``, and distillation from the unpruned model.

Every loss the training loop sees is a *step loss*, ``loss(model, batch) -> scalar tensor``: it runs the model's
forward itself. A user's function has that signature, so it handles any batch (dicts, several inputs) and any
output (dicts, Hugging Face ``ModelOutput``). A registered loss is a criterion ``criterion(outputs, targets)``
(``torch.nn.CrossEntropyLoss`` and the like), built with ``finetune.loss_options``; :class:`OutputsLoss` adapts it
to ``(inputs, targets, ...)`` batches: ``criterion(logits(model(inputs)), targets)``, and to Hugging Face dict
batches with ``labels``: plain ``cross_entropy`` (no options) is the model's own ``loss`` (a causal LM's shifts
its labels), any other criterion reads the ``logits`` (class dim last for tokens) and the labels.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from autoprune._registry import Registry, call_user, import_callable
from autoprune.engine import LABELS, call_model, has_labels, logits_of, output_loss, without_labels
from autoprune.errors import ConfigError

__all__ = [
    "LOSSES",
    "Distill",
    "DistillLoss",
    "OutputsLoss",
    "StepLoss",
    "distill_kl",
    "class_dim_first",
    "register_loss",
    "resolve_loss",
]

StepLoss = Callable[[nn.Module, Any], torch.Tensor]  # (model, batch) -> scalar loss
# A registered entry builds a criterion(outputs, targets) -> loss from its options (loss_options).
LossFactory = Callable[..., Callable[[Any, Any], torch.Tensor]]

LOSSES: Registry[LossFactory] = Registry("loss", entry_point_group="autoprune.losses")


def register_loss(name: str) -> Callable[[LossFactory], LossFactory]:
    """Register a criterion class (or factory) under ``name``: ``cls(**loss_options)(outputs, targets) -> loss``."""
    return LOSSES.register(name)


# Options: label_smoothing, ignore_index (255 for segmentation void pixels), reduction.
register_loss("cross_entropy")(nn.CrossEntropyLoss)


@register_loss("label_smoothing")
def label_smoothing(smoothing: float = 0.1, ignore_index: int = -100) -> nn.Module:
    """Cross-entropy with label smoothing (Szegedy et al. 2016), ``smoothing`` 0.1 unless set."""
    return nn.CrossEntropyLoss(label_smoothing=smoothing, ignore_index=ignore_index)


def class_dim_first(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token logits ``[batch, tokens, classes]`` for ``[batch, tokens]`` labels as ``[batch, classes, tokens]``, the
    layout ``cross_entropy`` takes; any other logits as they are."""
    if logits.dim() == 3 and labels.dim() == 2 and logits.shape[:2] == labels.shape:
        return logits.transpose(1, 2)
    return logits


@dataclass(frozen=True)
class OutputsLoss:
    """A registered criterion on ``(inputs, targets, ...)`` batches: ``criterion(logits(model(inputs)), targets)``."""

    criterion: Callable[[Any, Any], torch.Tensor]
    name: str = "cross_entropy"
    model_loss: bool = True  # a labels batch: the model's own loss when it returns one (plain cross-entropy)

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        if has_labels(batch):
            output = call_model(model, dict(batch) if self.model_loss else without_labels(batch))
            loss = output_loss(output) if self.model_loss else None
            if loss is not None:
                return loss
            labels = batch[LABELS]
            return self.criterion(class_dim_first(logits_of(output), labels), labels)
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:
            raise ConfigError(
                f"loss {self.name!r} takes (inputs, targets) batches or dicts with 'labels', found a {type(batch).__name__}; "
                "for other batches set finetune.loss: 'pkg.module:fn' with fn(model, batch) -> loss",
                key="finetune.loss",
            )
        return self.criterion(logits_of(call_model(model, batch[0])), batch[1])

    def forward_only(self, model: nn.Module, batch: Any) -> Any:
        """The model's forward on the batch's inputs (BatchNorm recalibration needs no loss)."""
        if has_labels(batch):
            return call_model(model, without_labels(batch))
        return call_model(model, batch[0] if isinstance(batch, (tuple, list)) else batch)


def resolve_loss(
    spec: str, options: Mapping[str, Any] | None = None, *, key: str = "finetune.loss",
    options_key: str = "finetune.loss_options", search_paths: Iterable[str | Path] = (),
) -> StepLoss:
    """A step loss from a registered name (built with ``options``) or ``"pkg.module:fn"`` (called as
    ``fn(model, batch, **options)``)."""
    options = dict(options or {})
    if ":" in spec:
        fn = import_callable(spec, key=key, expected="fn(model, batch) -> loss", search_paths=search_paths)
        _check_binds(fn, spec, options, options_key)
        if not options:
            return cast(StepLoss, fn)
        return cast(StepLoss, _WithOptions(fn, options))
    factory = LOSSES.get(spec, key=key)
    criterion = call_user(factory, what=f"loss {spec!r}", key=key, options=options, options_key=options_key)
    return OutputsLoss(criterion, spec, model_loss=spec == "cross_entropy" and not options)


@dataclass(frozen=True)
class _WithOptions:
    fn: Callable[..., torch.Tensor]
    options: Mapping[str, Any]

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return self.fn(model, batch, **self.options)


def _check_binds(fn: Callable[..., Any], spec: str, options: Mapping[str, Any], options_key: str) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(None, None, **options)
    except TypeError as exc:
        raise ConfigError(f"loss {spec!r} does not take (model, batch, **loss_options): {exc}", key=options_key) from None


@dataclass(frozen=True)
class Distill:
    """Knowledge distillation: ``(1 - weight) * task loss + weight * T^2 * KL(teacher || student)`` at ``T``."""

    weight: float = 0.5
    temperature: float = 4.0


def distill_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))`` over the class dimension (dim 1), averaged over
    the samples (and positions, for dense outputs such as segmentation logits), in float32."""
    if student.shape != teacher.shape:
        raise ValueError(f"distillation: student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ")
    t = temperature
    dim = 1 if student.dim() > 1 else 0
    log_s = F.log_softmax(student.float() / t, dim=dim)
    log_t = F.log_softmax(teacher.float() / t, dim=dim)
    return (log_t.exp() * (log_t - log_s)).sum(dim=dim).mean() * (t * t)


class DistillLoss:
    """A step loss with distillation from ``teacher`` (the unpruned model: eval mode, no gradients).

    The student's forward is the one the task loss runs (caught by a forward hook, the first call per step);
    the teacher is called with the same arguments, so any batch the task loss handles works here too.
    """

    def __init__(self, task_loss: StepLoss, teacher: nn.Module, distill: Distill) -> None:
        self.task_loss = task_loss
        self.teacher = teacher
        self.distill = distill

    def __call__(self, model: nn.Module, batch: Any) -> torch.Tensor:
        caught: list[tuple[Any, Any, Any]] = []

        def hook(_module: nn.Module, args: Any, kwargs: Any, output: Any) -> None:
            if not caught:
                caught.append((args, kwargs, output))

        handle = model.register_forward_hook(hook, with_kwargs=True)
        try:
            task = self.task_loss(model, batch)
        finally:
            handle.remove()
        if not caught:
            raise RuntimeError("distillation: the loss never called the model, so there are no student logits")
        args, kwargs, output = caught[0]
        was_training = self.teacher.training
        self.teacher.eval()
        try:
            with torch.no_grad():
                teacher_output = self.teacher(*args, **kwargs)
        finally:
            self.teacher.train(was_training)
        kd = distill_kl(logits_of(output), logits_of(teacher_output).detach(), self.distill.temperature)
        w = self.distill.weight
        return (1.0 - w) * task + w * kd
