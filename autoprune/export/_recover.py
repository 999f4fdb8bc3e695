"""From a plan to a recovered model: re-apply it, repeat the search's fine-tune, prune gradually, fine-tune.

Every metric here is taken on the split the search never scored on (the test split, when the data has one).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoprune.engine import (
    PruneReport,
    apply_plan,
    apply_sparsity,
    check_sparsity_held,
    count_nonzero_params,
    layer_sparsity,
    make_permanent,
)
from autoprune.errors import PruningError
from autoprune.evaluate import Evaluator, build_evaluator, reconstruct
from autoprune.plan import PruningPlan, kept_channels
from autoprune.schedules import SCHEDULES, step_fractions
from autoprune.study import FinetuneBudget, Task, calibration_batches, recorded_seed

__all__ = [
    "SCHEDULES",
    "EpochHook",
    "Recovered",
    "prune_gradually",
    "recover",
    "recovery_evaluator",
    "search_finetune_seed",
    "step_fractions",
    "step_plan",
]

# on_epoch(phase, epoch, epochs, loss): phase is "search fine-tune", "step k/K" or "recovery".
EpochHook = Callable[[str, int, int, float], None]
# between(step k, model): what runs after each step but the last (the step's fine-tune)
StepHook = Callable[[int, nn.Module], None]


def step_plan(plan: PruningPlan, fraction: float, base: dict[str, int], current: dict[str, int]) -> PruningPlan:
    """The plan for one step, with ratios relative to the ``current`` channel counts, that leaves
    ``kept_channels(base, ratio * fraction)`` channels in each group, so the last step lands exactly on ``plan``.
    """
    groups: dict[str, tuple[float, str]] = {}
    for name, entry in plan.groups.items():
        target = kept_channels(base[name], entry.ratio * fraction, plan.round_to)
        if target > current[name]:
            raise PruningError(f"group {name!r}: step target {target} exceeds the {current[name]} channels left")
        groups[name] = (1.0 - target / current[name], entry.criterion)
    return PruningPlan(groups, round_to=plan.round_to, scope=plan.scope)


def prune_gradually(
    task: Task, plan: PruningPlan, fractions: list[float], between: StepHook = lambda _k, _model: None
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """Prune a copy of the base towards ``plan`` in ``len(fractions)`` steps; returns the model and, per step,
    what it reached (fraction, channels per group, sparsity per layer, non-zero params).

    Step k keeps ``kept_channels(base, ratio * fraction_k)`` channels of each group (criteria re-scored on the
    current weights) and zeroes ``round(amount * fraction_k * weights)`` weights of each layer, adding to the
    zeros of the steps before. The last fraction is 1, so the last step lands on the plan. Channel pruning
    needs plain weights, so the masks are folded in before it and rebuilt from the zeros after.
    """
    base_channels = {g.name: g.channels for g in task.base.groups}
    unknown = sorted(set(plan.groups) - set(base_channels))
    if unknown:
        raise PruningError(f"plan names group {unknown[0]!r}, which is not a prunable group of this task")
    current = {name: base_channels[name] for name in plan.groups}  # each planned group's channels so far
    model = copy.deepcopy(task.base.model)
    steps: list[dict[str, Any]] = []
    for k, fraction in enumerate(fractions, start=1):
        if plan.groups:
            make_permanent(model)
            step = step_plan(plan.structured(), fraction, base_channels, current)
            model, report = apply_plan(model, task.base.example_inputs, step, gradient_batches=task.gradient_batches)
            current = {name: after for name, (_, after) in report.channels.items()}
        if plan.sparsity is not None:
            apply_sparsity(model, plan.sparsity.scaled(fraction))
        steps.append(
            {
                "step": k,
                "fraction": fraction,
                "channels": dict(current),
                "sparsity": layer_sparsity(model, list(plan.sparsity.amounts)) if plan.sparsity is not None else {},
                "nonzero_params": count_nonzero_params(model),
            }
        )
        if k < len(fractions):
            between(k, model)
    return model, steps


def search_finetune_seed(task: Task, trial_number: int, recorded: Mapping[str, Any] | None = None) -> int:
    """The seed the search fine-tuned this trial with: the one its user attributes record, else ``trial_seed``
    of its number (see study/_objective.py)."""
    return recorded_seed(recorded or {}, task.config.study.seed, trial_number)


@dataclass
class Recovered:
    model: nn.Module
    report: PruneReport  # the plan applied in one shot to the base: the model the search scored
    metrics: dict[str, float]  # base, pruned, search_finetuned, recovered on the split; recreated_validation
    split: str
    fractions: list[float]
    seconds: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)  # what each gradual step reached
    sparsity: dict[str, float] = field(default_factory=dict)  # each sparsified layer's zero fraction, at the end
    reconstruction: dict[str, Any] = field(default_factory=dict)  # "search" / "export": Reconstruction.to_dict()


class _Finetunes:
    """Runs the fine-tunes of one recovery: reports each epoch to the hook, adds up each phase's seconds."""

    reconstruction: dict[str, Any]

    def __init__(self, task: Task, on_epoch: EpochHook | None) -> None:
        self.reconstruction = {}
        self.task = task
        self.hook = on_epoch or (lambda *_: None)
        self.seconds: dict[str, float] = {}

    def run(self, model: nn.Module, phase: str, by: Any, epochs: int, steps: int | None, lr: float, seed: int) -> None:
        started = time.perf_counter()
        shown = epochs if steps is None else _passes(self.task, steps)
        by.finetune(
            model,
            epochs=epochs,
            steps=steps,
            lr=lr,
            seed=seed,
            on_epoch=lambda epoch, loss: self.hook(phase, epoch, shown, loss),
        )
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - started


def _recreate(
    task: Task,
    plan: PruningPlan,
    eval_loader: Iterable[Any],
    finetunes: _Finetunes,
    searched: FinetuneBudget,
    seed: int,
) -> tuple[nn.Module, PruneReport, dict[str, float]]:
    """The model the search scored: the plan applied in one shot, recalibrated and fine-tuned as in the search;
    with the base, pruned, search-fine-tuned and re-created validation metrics."""
    evaluator = task.evaluator  # the search's: re-creates and scores the trial exactly
    ft = task.config.finetune
    metrics = {"base": evaluator.score(task.base.model, eval_loader)}
    scored, report = task.prune(plan)
    metrics["pruned"] = evaluator.score(scored, eval_loader)
    if ft.reconstruct is not None:
        fitted = _reconstructed(task, scored, report, ft.reconstruct, seed)
        finetunes.reconstruction["search"] = fitted
    evaluator.recalibrate(scored, ft.bn_recalibration_batches, seed)
    if not searched.none:
        finetunes.run(scored, "search fine-tune", evaluator, searched.epochs, searched.steps, ft.lr, seed)
    metrics["search_finetuned"] = evaluator.score(scored, eval_loader)
    metrics["recreated_validation"] = evaluator.score(scored)  # the trial's own score, if it reproduced
    return scored, report, metrics


def _prune_in_steps(
    task: Task,
    plan: PruningPlan,
    fractions: list[float],
    report: PruneReport,
    recovery: Any,
    finetunes: _Finetunes,
    seed: int,
    log: Callable[[str], None],
) -> tuple[nn.Module, list[dict[str, Any]]]:
    """The base pruned again in ``len(fractions)`` steps, fine-tuned between steps; checks that it lands on the
    channels of the one-shot ``report``."""
    ecfg = task.config.export
    schedule = ecfg.schedule

    def between(k: int, stepped: nn.Module) -> None:
        recovery.recalibrate(stepped, ecfg.bn_recalibration_batches, seed + k)
        finetunes.run(stepped, f"step {k}/{len(fractions)}", recovery, schedule.step_epochs, None, ecfg.lr, seed + k)

    model, steps = prune_gradually(task, plan, fractions, between)
    recovery.recalibrate(model, ecfg.bn_recalibration_batches, seed + len(fractions))
    for step in steps:
        log(f"step {step['step']}/{len(fractions)}: {step['fraction']:.3f} of the plan, {step['nonzero_params']} non-zero params")
    if plan.groups:
        reached = steps[-1]["channels"]
        wrong = {n: (reached[n], after) for n, (_, after) in report.channels.items() if reached[n] != after}
        if wrong:
            raise PruningError(f"gradual pruning ended with channels {wrong} (found, planned); expected the plan's")
    return model, steps


def recover(
    task: Task,
    plan: PruningPlan,
    trial_number: int,
    *,
    eval_loader: Iterable[Any],
    split: str = "test",
    on_epoch: EpochHook | None = None,
    log: Callable[[str], None] = lambda _: None,
    search_finetune: FinetuneBudget | None = None,
    recorded: Mapping[str, Any] | None = None,
) -> Recovered:
    """Re-create the scored model, then the recovered one, with every pruning mask made permanent.

    ``recorded`` are the trial's user attributes (the seed it ran with). ``search_finetune`` is the fine-tune the
    trial had in the search (a staged search's promoted finalist
    fine-tuned longer than the config says); None: the config's.

    With ``export.schedule.steps`` = 1 the recovery fine-tune continues from the search's fine-tuned model.
    With K > 1 the base model is pruned again in K steps (:func:`prune_gradually`, the schedule's fractions
    of each ratio and sparsity), with ``schedule.step_epochs`` of fine-tuning between steps, and the recovery
    fine-tune follows the last step. Masks stay on during every fine-tune, so pruned weights stay zero.
    """
    ecfg = task.config.export
    recovery = recovery_evaluator(task)  # export's recipe (the user's evaluator serves both)
    finetunes = _Finetunes(task, on_epoch)
    seed = search_finetune_seed(task, trial_number, recorded)
    searched = search_finetune if search_finetune is not None else FinetuneBudget.of(task.config)
    scored, report, metrics = _recreate(task, plan, eval_loader, finetunes, searched, seed)

    schedule = ecfg.schedule
    fractions = step_fractions(schedule.steps, schedule.kind, schedule.exponent)
    steps: list[dict[str, Any]] = []
    if len(fractions) == 1:
        model = scored
    else:
        model, steps = _prune_in_steps(task, plan, fractions, report, recovery, finetunes, seed, log)

    if ecfg.reconstruct is not None:
        finetunes.reconstruction["export"] = _reconstructed(task, model, report, ecfg.reconstruct, seed)
        recovery.recalibrate(model, ecfg.bn_recalibration_batches, seed)
    layers = list(plan.sparsity.amounts) if plan.sparsity is not None else []
    pruned_sparsity = layer_sparsity(model, layers)
    finetunes.run(model, "recovery", recovery, ecfg.epochs, ecfg.steps, ecfg.lr, seed + len(fractions))
    metrics["recovered"] = task.evaluator.score(model, eval_loader)
    sparsity = check_sparsity_held(model, pruned_sparsity, during="recovery")
    make_permanent(model)  # plain `weight` tensors holding the zeros; no weight_orig / weight_mask
    return Recovered(
        model.eval(), report, metrics, split, fractions, finetunes.seconds, steps, sparsity, finetunes.reconstruction
    )


def _reconstructed(task: Task, model: nn.Module, report: PruneReport, section: Any, seed: int) -> dict[str, Any]:
    """``model`` refitted layer by layer to the base model's outputs (``reconstruct``), as the record says it."""
    started = time.perf_counter()
    fitted = reconstruct(
        model, task.base.model, calibration_batches(task, section.batches), kept=report.kept, ridge=section.ridge,
        positions=section.positions, seed=seed,
    )  # fmt: skip
    return {**fitted.to_dict(), "seconds": time.perf_counter() - started, "warnings": list(fitted.warnings)}


def recovery_evaluator(task: Task) -> Any:
    """The evaluator of export's recovery: the built-in one with ``export``'s recipe (distilling from the base
    model when ``export.distill`` is set), or the user's evaluator as it is (its recipe is its own)."""
    searched = task.evaluator
    if not isinstance(searched, Evaluator):
        return searched
    return build_evaluator(
        task.config,
        train_loader=searched.train_loader,
        val_loader=searched.val_loader,
        metric=searched.metric,
        runtime=searched.runtime,
        teacher=task.base.model if task.config.export.distill is not None else None,
        section="export",
    )


def _passes(task: Task, steps: int) -> int:
    """How many (partial) passes over the training data ``steps`` optimizer steps make, for progress lines."""
    try:
        per_pass = len(task.data.train)  # type: ignore[arg-type]
    except TypeError:
        return steps
    return -(-steps // max(per_pass, 1))
