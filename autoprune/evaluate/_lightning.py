"""An evaluator for Lightning users: their ``LightningModule``'s ``training_step`` / ``validation_step`` are the recipe.

``lightning`` is an optional extra (``pip install 'autoprune[lightning]'``): nothing here imports it until an
evaluator is built, so ``from autoprune.evaluate import LightningEvaluator`` costs nothing without it.
NNI's ``LightningEvaluator`` is the model: the user's module and a fresh ``Trainer`` per call, no sanity check,
the budget set by autoprune (``max_steps`` / ``max_epochs``).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from autoprune._registry import import_object
from autoprune.engine import weights_device
from autoprune.errors import ConfigError
from autoprune.evaluate._runtime import Runtime
from autoprune.evaluate._train import recalibrate_bn, reseed

__all__ = ["LightningEvaluator", "lightning_evaluator"]

INSTALL_HINT = "pip install 'autoprune[lightning]'"
# Trainer arguments autoprune sets itself: the budget is per call, and the device is where the model already is.
RESERVED_TRAINER_OPTIONS = ("max_epochs", "max_steps", "min_epochs", "min_steps", "accelerator", "devices", "num_nodes")
# The fine-tune's learning rate goes to the first of these the LightningModule has (as Lightning's LR finder looks).
LR_ATTRIBUTES = ("lr", "learning_rate")
# Per-Trainer start-up chatter ("GPU available: ...") and hints that do not apply to a trial's short runs.
_QUIET_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "pytorch_lightning.utilities.rank_zero")
_QUIET_WARNINGS = (
    ".*does not have many workers.*",
    ".*GPU available but not used.*",
    ".*defined a `validation_step` but have no `val_dataloader`.*",  # fit trains only; score validates
    ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",  # lightning's own use of torch's pytree
)

ForwardBatch = Callable[[nn.Module, Any], Any]


def _api(module: object | None = None) -> Any:
    """``lightning.pytorch``, or ``pytorch_lightning`` for a module built on that older package (imported only then)."""
    packages: list[Any] = []
    for name in ("lightning.pytorch", "pytorch_lightning"):
        try:
            api = importlib.import_module(name)
        except ImportError:
            continue
        if module is None or isinstance(module, api.LightningModule):
            return api
        packages.append(api)
    if not packages:
        raise ConfigError(
            f"the Lightning evaluator needs the optional extra lightning, which is not installed: {INSTALL_HINT}",
            key="evaluator",
        )
    return packages[0]  # not a LightningModule: the caller says so


class LightningEvaluator:
    """Recalibrate, fine-tune and score a pruned candidate with the user's ``LightningModule``.

    ``module_factory(model) -> LightningModule`` wraps the candidate (an ``nn.Module``, already on its device) in
    the user's module, which must hold that very object (``self.model = model``): Lightning then trains it in place.
    ``finetune`` runs ``Trainer.fit`` with ``max_steps=steps`` (or ``max_epochs=epochs``); ``score`` runs
    ``Trainer.validate`` and returns the value ``validation_step`` logged as ``metric_key`` (higher is better).
    The learning rate of a call is set on the module's ``lr`` or ``learning_rate`` attribute or hyperparameter
    (``lr_attribute`` names another) for ``configure_optimizers`` to read; a module with none of them keeps its own
    (a warning says so). ``trainer_options`` go to every ``Trainer`` (``precision="bf16-mixed"``,
    ``gradient_clip_val``, ``accumulate_grad_batches``, ``callbacks``, ...), except the budget and the device;
    ``limit_val_batches`` bounds the search's scoring (a loader passed to ``score``, as export does, is scored whole).
    ``recalibrate`` re-estimates BatchNorm statistics on training batches run through
    ``forward_batch(model, batch)`` (default: the model on ``batch[0]`` of a tuple, ``model(**batch)`` for a dict).
    """

    def __init__(
        self,
        module_factory: Callable[[nn.Module], Any],
        train_loader: Iterable[Any],
        val_loader: Iterable[Any],
        *,
        metric_key: str = "val_acc",
        trainer_options: Mapping[str, Any] | None = None,
        lr_attribute: str | None = None,
        forward_batch: ForwardBatch | None = None,
    ) -> None:
        _api()  # without the extra: one line saying how to install it, now rather than in the first trial
        options = dict(trainer_options or {})
        reserved = sorted(set(options) & set(RESERVED_TRAINER_OPTIONS))
        if reserved:
            raise ValueError(
                f"trainer_options {reserved} are set by autoprune (the budget per call, the device from the model)"
            )
        if not callable(module_factory):
            raise TypeError(f"module_factory must be callable (model -> LightningModule), got {module_factory!r}")
        self.module_factory = module_factory
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.metric_key = metric_key
        self.trainer_options = options
        self.lr_attribute = lr_attribute
        self.forward_batch = forward_batch
        self._warned_lr = False

    # -- the evaluator contract -------------------------------------------------------------------------------

    def recalibrate(self, model: nn.Module, batches: int, seed: int) -> int:
        # The built-in recalibration, on the model's own device; Lightning's precision applies to its own loops.
        runtime = Runtime(device=str(weights_device(model)))
        return recalibrate_bn(model, self.train_loader, batches, seed, forward=self.forward_batch, runtime=runtime)

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
        """Fit the user's module on the training loader; returns the last epoch's mean training loss."""
        if (steps if steps is not None else epochs) <= 0:
            return math.nan
        module = self._wrap(model)
        self._set_lr(module, lr)
        api = _api(module)
        api.seed_everything(seed, workers=True, verbose=False)
        reseed(self.train_loader, seed)  # the same pass for the same seed, whatever ran before
        losses = _loss_tracker(api, on_epoch)
        budget = {"max_steps": steps, "max_epochs": -1} if steps is not None else {"max_epochs": epochs}
        trainer = self._trainer(api, model, budget, extra_callbacks=[losses])
        model.train()  # Lightning keeps the modes it finds, and a candidate arrives in eval mode from scoring
        with self._kept_on(model):
            trainer.fit(module, train_dataloaders=self.train_loader)
        model.eval()
        return float(losses.last_mean)

    def score(self, model: nn.Module, loader: Iterable[Any] | None = None) -> float:
        module = self._wrap(model)
        api = _api(module)
        # limit_val_batches in trainer_options bounds the search's scoring; a loader given (export) is scored whole.
        trainer = self._trainer(api, model, {} if loader is None else {"limit_val_batches": 1.0})
        with self._kept_on(model):
            trainer.validate(module, dataloaders=self.val_loader if loader is None else loader, verbose=False)
        model.eval()
        metrics = trainer.callback_metrics
        if self.metric_key not in metrics:
            logged = ", ".join(sorted(metrics)) or "nothing"
            raise ConfigError(
                f"validation_step logged no {self.metric_key!r} (logged: {logged}); "
                f"call self.log({self.metric_key!r}, value) in validation_step or set metric_key",
                key="evaluator_options.metric_key",
            )
        return float(metrics[self.metric_key])

    # -- helpers --------------------------------------------------------------------------------------------

    def _wrap(self, model: nn.Module) -> Any:
        module = self.module_factory(model)
        api = _api(module)
        if not isinstance(module, api.LightningModule):
            raise TypeError(f"module_factory returned a {type(module).__name__}, expected a LightningModule")
        first = next(model.parameters(), None)
        if first is not None and not any(p is first for p in module.parameters()):
            # A copy would be fine-tuned while the candidate that is scored and exported stays as it was.
            raise ValueError(
                f"module_factory returned a {type(module).__name__} that does not hold the model it was given; "
                "keep the model itself (self.model = model), not a copy"
            )
        return module

    def _set_lr(self, module: Any, lr: float) -> None:
        hparams = getattr(module, "hparams", {})
        for name in (self.lr_attribute,) if self.lr_attribute else LR_ATTRIBUTES:
            found = False
            if name in hparams:  # save_hyperparameters(): configure_optimizers reads self.hparams.lr
                hparams[name] = lr
                found = True
            if hasattr(module, name) and not callable(getattr(module, name)):
                setattr(module, name, lr)
                found = True
            if found:
                return
        if self.lr_attribute:
            raise ValueError(f"{type(module).__name__} has no attribute or hyperparameter {self.lr_attribute!r} (lr_attribute)")
        if not self._warned_lr:
            self._warned_lr = True
            warnings.warn(
                f"{type(module).__name__} has no lr or learning_rate attribute or hyperparameter: finetune.lr is not "
                "used, configure_optimizers keeps its own learning rate",
                stacklevel=3,
            )

    def _trainer(self, api: Any, model: nn.Module, budget: Mapping[str, Any], extra_callbacks: Iterable[Any] = ()) -> Any:
        accelerator, devices = _accelerator(weights_device(model))
        options: dict[str, Any] = {
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **self.trainer_options,
            **budget,
        }
        options["callbacks"] = [*list(options.get("callbacks") or []), *extra_callbacks]
        with _quiet():
            return api.Trainer(accelerator=accelerator, devices=devices, **options)

    @contextlib.contextmanager
    def _kept_on(self, model: nn.Module) -> Iterator[None]:
        """Run a Trainer call quietly and leave ``model`` where it was: Lightning's teardown moves it to the CPU."""
        device = weights_device(model)
        try:
            with _quiet():
                yield
        finally:
            model.to(device)


def _accelerator(device: torch.device) -> tuple[str, Any]:
    if device.type == "cuda":
        return "gpu", [device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "mps":
        return "mps", 1
    return "cpu", 1


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        for pattern in _QUIET_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels, strict=True):
                log.setLevel(level)


def _loss_tracker(api: Any, on_epoch: Callable[[int, float], None] | None) -> Any:
    """A Lightning callback: the mean training loss of each epoch, passed to ``on_epoch(epoch, loss)``; a
    non-finite loss raises FloatingPointError (as the built-in fine-tune does) rather than training on garbage."""

    class LossTracker(api.Callback):
        def __init__(self) -> None:
            self.total, self.count, self.last_mean = 0.0, 0, math.nan

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            self.total, self.count = 0.0, 0

        def on_before_backward(self, trainer: Any, pl_module: Any, loss: torch.Tensor) -> None:
            if not torch.isfinite(loss.detach()).all():  # before the optimizer steps on it
                raise FloatingPointError(f"non-finite training loss {loss.item()} in epoch {trainer.current_epoch + 1}")

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
            if isinstance(loss, torch.Tensor):  # manual optimisation may return nothing: no loss to track
                self.total, self.count = self.total + float(loss.detach()), self.count + 1

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if self.count:
                self.last_mean = self.total / self.count
                if on_epoch is not None:
                    on_epoch(trainer.current_epoch + 1, self.last_mean)

    return LossTracker()


def lightning_evaluator(
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    metric: object = None,
    *,
    module: str | Callable[..., Any],
    module_options: Mapping[str, Any] | None = None,
    metric_key: str = "val_acc",
    trainer_options: Mapping[str, Any] | None = None,
    lr_attribute: str | None = None,
) -> LightningEvaluator:
    """The config-side factory: ``evaluator: "autoprune.evaluate:lightning_evaluator"`` with
    ``evaluator_options: {module: "mypkg:LitClassifier", module_options: {...}, metric_key: val_acc}`` builds
    ``LitClassifier(model, **module_options)`` per call. autoprune's ``metric`` is not used: the score is what
    ``validation_step`` logs as ``metric_key``."""
    del metric
    cls = import_object(module, key="evaluator_options.module") if isinstance(module, str) else module
    if not callable(cls):
        raise ConfigError(f"{module!r} is not a LightningModule class or factory", key="evaluator_options.module")
    options = dict(module_options or {})

    def module_factory(model: nn.Module) -> Any:
        return cls(model, **options)

    return LightningEvaluator(
        module_factory, train_loader, val_loader, metric_key=metric_key, trainer_options=trainer_options,
        lr_attribute=lr_attribute,
    )
