"""From a plan to a recovered model: re-apply it, repeat the search's fine-tune, prune gradually, fine-tune.

Every metric here is taken on the split the search never scored on (the test split, when the data has one).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from autoprune._registry import Registry
from autoprune.engine import PruneReport, apply_plan, find_groups
from autoprune.errors import PruningError
from autoprune.plan import PruningPlan, kept_channels
from autoprune.study import Task

__all__ = ["SCHEDULES", "EpochHook", "Recovered", "recover", "search_finetune_seed", "step_fractions", "step_plan"]

# on_epoch(phase, epoch, epochs, loss): phase is "search fine-tune", "step k/K" or "recovery".
EpochHook = Callable[[str, int, int, float], None]
Schedule = Callable[[int], list[float]]

SCHEDULES: Registry[Schedule] = Registry("pruning schedule")


@SCHEDULES.register("linear")
def linear_schedule(steps: int) -> list[float]:
    """Step k of K reaches fraction k/K of each group's final pruning ratio (torch-pruning's iterative_steps)."""
    return [(k + 1) / steps for k in range(steps)]


def step_fractions(steps: int, kind: str = "linear") -> list[float]:
    """The fraction of the plan's ratios reached after each step; the last is always 1."""
    fractions = SCHEDULES.get(kind)(steps)
    if len(fractions) != steps or abs(fractions[-1] - 1.0) > 1e-12:
        raise ValueError(f"schedule {kind!r} gave {fractions} for {steps} steps; expected {steps} values ending at 1")
    return fractions


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


def search_finetune_seed(task: Task, trial_number: int) -> int:
    """The seed the search fine-tuned this trial with (see study/_objective.py)."""
    return task.config.study.seed * 100_003 + trial_number


@dataclass
class Recovered:
    model: nn.Module
    report: PruneReport  # the plan applied in one shot to the base: the model the search scored
    metrics: dict[str, float]  # base, pruned, search_finetuned, recovered
    split: str
    fractions: list[float]
    seconds: dict[str, float] = field(default_factory=dict)


def _counts(model: nn.Module, task: Task) -> dict[str, int]:
    return {g.name: g.channels for g in find_groups(model, task.example_inputs, ignore=task.config.prune.ignore, check=False)}


def recover(
    task: Task,
    plan: PruningPlan,
    trial_number: int,
    *,
    eval_loader: Iterable[Any],
    split: str = "test",
    on_epoch: EpochHook | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> Recovered:
    """Re-create the scored model, then the recovered one.

    With ``export.iterative_steps`` = 1 the recovery fine-tune continues from the search's fine-tuned model.
    With K > 1 the base model is pruned again in K steps (the schedule's fractions of each ratio, criteria
    re-scored on the current weights each step), with ``step_epochs`` of fine-tuning between steps, and the
    recovery fine-tune follows the last step.
    """
    cfg, ecfg = task.config, task.config.export
    hook = on_epoch or (lambda *_: None)
    evaluator = task.evaluator
    seconds: dict[str, float] = {}

    def finetune(model: nn.Module, phase: str, epochs: int, lr: float, seed: int, train_cfg: Any) -> None:
        started = time.perf_counter()
        evaluator.finetune(
            model,
            epochs=epochs,
            lr=lr,
            momentum=train_cfg.momentum,
            weight_decay=train_cfg.weight_decay,
            seed=seed,
            on_epoch=lambda epoch, loss: hook(phase, epoch, epochs, loss),
        )
        seconds[phase] = seconds.get(phase, 0.0) + time.perf_counter() - started

    metrics = {"base": evaluator.score(task.base_model, eval_loader)}
    scored, report = apply_plan(
        task.base_model,
        task.example_inputs,
        plan,
        base_counts=task.base_counts,
        gradient_batches=task.gradient_batches,
    )
    metrics["pruned"] = evaluator.score(scored, eval_loader)

    seed = search_finetune_seed(task, trial_number)
    evaluator.recalibrate(scored, cfg.finetune.bn_recalibration_batches)
    finetune(scored, "search fine-tune", cfg.finetune.epochs, cfg.finetune.lr, seed, cfg.finetune)
    metrics["search_finetuned"] = evaluator.score(scored, eval_loader)

    fractions = step_fractions(ecfg.iterative_steps)
    if len(fractions) == 1:
        model = scored
    else:
        base_channels = _counts(task.base_model, task)
        model = task.base_model
        for k, fraction in enumerate(fractions, start=1):
            phase = f"step {k}/{len(fractions)}"
            step = step_plan(plan, fraction, base_channels, _counts(model, task))
            model, _ = apply_plan(model, task.example_inputs, step, gradient_batches=task.gradient_batches)
            evaluator.recalibrate(model, ecfg.bn_recalibration_batches)
            if k < len(fractions):
                finetune(model, phase, ecfg.step_epochs, ecfg.lr, seed + k, ecfg)
            log(f"{phase}: {fraction:.2f} of the plan's ratios, {evaluator.score(model, eval_loader):.4f} on {split}")
        reached = _counts(model, task)
        wrong = {n: (reached[n], after) for n, (_, after) in report.channels.items() if reached[n] != after}
        if wrong:
            raise PruningError(f"gradual pruning ended with channels {wrong} (found, planned); expected the plan's")

    finetune(model, "recovery", ecfg.epochs, ecfg.lr, seed + len(fractions), ecfg)
    metrics["recovered"] = evaluator.score(model, eval_loader)
    return Recovered(model.eval(), report, metrics, split, fractions, seconds)
