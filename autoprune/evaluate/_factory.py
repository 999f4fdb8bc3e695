"""Building an evaluator: the built-in one from the config's recipe, or the user's from ``evaluator:``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

from torch import nn

from autoprune._registry import call_user, import_callable
from autoprune.config import Config
from autoprune.evaluate._evaluator import Evaluator, check_evaluator
from autoprune.evaluate._losses import Distill, resolve_loss
from autoprune.evaluate._runtime import Runtime
from autoprune.metrics import Metric

__all__ = ["build_evaluator", "load_user_evaluator"]


def _search_paths(config: Config) -> list[Path]:
    """As ``study.factory_search_paths``: the config file's folder, then the working directory."""
    return [*([config.source.parent] if config.source is not None else []), Path.cwd()]


def build_evaluator(
    config: Config,
    *,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    metric: Metric,
    runtime: Runtime,
    teacher: nn.Module | None = None,
    section: Literal["finetune", "export"] = "finetune",
    search_paths: Iterable[str | Path] | None = None,
) -> Evaluator:
    """The built-in evaluator with ``config.finetune``'s recipe. ``section="export"``: export's recovery recipe,
    whose optimizer and loss default to finetune's (and loss options too, unless export sets the loss).

    ``teacher`` (the unpruned model, on the runtime's device) is used when the section's ``distill`` is set, and
    required then. ``score(model)`` reads the first ``finetune.val_batches`` validation batches in either
    section, so a re-created trial scores as it did in the search."""
    ft = config.finetune
    if section == "finetune":
        optimizer, loss, options, distill = ft.optimizer, ft.loss, ft.loss_options, ft.distill
    elif section == "export":
        ex = config.export
        optimizer = ex.optimizer or ft.optimizer
        loss = ex.loss or ft.loss
        # export.loss alone takes no options of finetune's (they belong to finetune's loss)
        options = ex.loss_options if ex.loss_options is not None else ({} if ex.loss is not None else ft.loss_options)
        distill = ex.distill
    else:
        raise ValueError(f"section must be 'finetune' or 'export', found {section!r}")
    loss_section = section if section == "finetune" or config.export.loss is not None else "finetune"
    own_options = config.export.loss_options is not None or config.export.loss is not None
    options_section = section if section == "finetune" or own_options else "finetune"
    step_loss = resolve_loss(
        loss,
        options,
        key=f"{loss_section}.loss",
        options_key=f"{options_section}.loss_options",
        search_paths=_search_paths(config) if search_paths is None else search_paths,
    )
    if distill is not None and teacher is None:
        raise ValueError(f"{section}.distill is set: build_evaluator needs teacher=, the unpruned model")
    section_cfg = ft if section == "finetune" else config.export
    return Evaluator(
        train_loader=train_loader,
        val_loader=val_loader,
        metric=metric,
        runtime=runtime,
        optimizer=optimizer,
        momentum=section_cfg.momentum,
        weight_decay=section_cfg.weight_decay,
        loss=step_loss,
        distill=Distill(distill.weight, distill.temperature) if distill is not None else None,
        teacher=teacher if distill is not None else None,
        val_batches=ft.val_batches,
    )


def load_user_evaluator(
    spec: str,
    options: Mapping[str, Any],
    *,
    train_loader: Iterable[Any],
    val_loader: Iterable[Any],
    metric: Metric,
    search_paths: Iterable[str | Path] = (),
) -> object:
    """The user's evaluator: ``factory(train_loader=, val_loader=, metric=, **options)`` imported from
    ``"pkg.module:factory"``. A bad spec, an error in the factory, or a result without ``recalibrate``,
    ``finetune`` and ``score`` is a one-line ConfigError at ``evaluator`` (``evaluator_options`` for options the
    factory does not take)."""
    factory = import_callable(spec, key="evaluator", expected="an evaluator factory", search_paths=search_paths)
    evaluator = call_user(
        factory,
        what=f"evaluator factory {spec!r}",
        key="evaluator",
        options=options,
        options_key="evaluator_options",
        train_loader=train_loader,
        val_loader=val_loader,
        metric=metric,
    )
    return check_evaluator(evaluator, key="evaluator", what=f"the object {spec!r} returned")
