"""Everything a trial needs, built once per process: data, base model, groups, base figures, space.

Resolving a config lives in ``_resolve``, the base model in ``_base``, writing the run folder in ``_io``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, cast, runtime_checkable

from torch import nn

from autoprune._registry import one_line
from autoprune.config import Config
from autoprune.criteria import needs_gradients
from autoprune.data import DataBundle
from autoprune.engine import (
    Group,
    PruneReport,
    apply_plan,
    compressed_bytes,
    count_macs_params,
    count_nonzero_params,
    importance_table,
    relative_macs,
)
from autoprune.errors import AutopruneError, ConfigError, PruningError
from autoprune.evaluate import (
    Candidate,
    LatencyMeter,
    LatencyTable,
    MemoryCache,
    Runtime,
    build_evaluator,
    check_evaluator,
    fixed_batches,
    get_cost,
    load_user_evaluator,
    needs_latency_table,
)
from autoprune.plan import PruningPlan
from autoprune.space import SearchSpace, SparsitySpace, get_ratio_schedule
from autoprune.study._base import Log, trained_base
from autoprune.study._io import atomic_write_bytes, check_output_writable, removed_if_failed
from autoprune.study._latency_table import latency_table
from autoprune.study._resolve import Resolved, check_metric_value, factory_search_paths, resolve

__all__ = [
    "CHANCE_MARGIN",
    "CandidateEvaluator",
    "Log",
    "Resolved",
    "Task",
    "TrainedBase",
    "atomic_write_bytes",
    "fit_budgets",
    "check_output_writable",
    "prepare_task",
    "resolve",
]

CHANCE_MARGIN = 0.05  # a base accuracy within this of 1 / num_classes is warned about


@runtime_checkable
class CandidateEvaluator(Protocol):
    """What recalibrates, fine-tunes and scores a candidate: the built-in ``Evaluator`` or the user's."""

    def recalibrate(self, model: nn.Module, batches: int, seed: int) -> int: ...

    def finetune(
        self,
        model: nn.Module,
        *,
        epochs: int,
        steps: int | None,
        lr: float,
        seed: int,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> float: ...

    def score(self, model: nn.Module, loader: Any = None) -> float: ...


@dataclass(frozen=True, kw_only=True)
class TrainedBase:
    """The trained model every candidate is pruned from, and what was measured of it once."""

    model: nn.Module
    example_inputs: Any  # a tensor, a tuple (positional) or a dict (keyword arguments); engine.call_model calls
    groups: list[Group]
    macs: int
    params: int
    metric: float
    layers: list[str] = field(default_factory=list)  # layers unstructured pruning may sparsify
    nonzero_params: int = 0
    compressed_bytes: int = 0  # gzip of the state_dict; measured when prune.mode is unstructured

    @property
    def counts(self) -> tuple[int, int]:
        return self.macs, self.params


@dataclass(kw_only=True)
class Task:
    """What a trial needs: the config, the trained base, the data and the recipe that fine-tunes and scores, the
    search space, and (for taylor, and latency.mode predicted) the fixed gradient batches and the latency table."""

    config: Config
    base: TrainedBase
    data: DataBundle
    evaluator: CandidateEvaluator
    space: SearchSpace
    runtime: Runtime = field(default_factory=Runtime)  # the base model, its copies and the batches sit on its device
    gradient_batches: list[Any] = field(default_factory=list)  # for criteria that need gradients (taylor)
    latency_table: LatencyTable | None = None  # latency.mode predicted / both, or prune.round_to auto
    # The meter plans run without a study are timed with (uniform sweeps, benchmarks), built on first need, so the
    # base is timed once per task (study._latency.process_latency_meter).
    process_meter: LatencyMeter | None = field(default=None, compare=False, repr=False)

    def prune(self, plan: PruningPlan) -> tuple[nn.Module, PruneReport]:
        """``plan`` applied to a copy of the base model (with this task's gradient batches, for taylor)."""
        base = self.base
        return apply_plan(base.model, base.example_inputs, plan, base_counts=base.counts, gradient_batches=self.gradient_batches)


def _base_metric(config: Config, evaluator: CandidateEvaluator, model: nn.Module, *, user: bool) -> float:
    """The base model's metric as the evaluator scores candidates; one that fails or is not finite is refused."""
    key, what = ("evaluator", "the evaluator") if user else ("metric", f"metric {config.metric!r}")
    try:
        value = evaluator.score(model.eval())
    except AutopruneError:
        raise
    except Exception as exc:  # user code
        raise ConfigError(f"{what} raised {one_line(exc)} on the base model", key=key) from None
    metric = check_metric_value(value, config.metric, "the base model")
    if not math.isfinite(metric):
        raise ConfigError(
            f"the base model's {config.metric} is {metric}; a non-finite base metric leaves nothing to compare "
            "pruned models with (check the metric, the data and the base model)",
            key="metric",
        )
    return metric


def _chance_warning(config: Config, data: DataBundle, metric: float) -> str | None:
    num_classes = config.model.num_classes or data.num_classes
    if config.metric != "accuracy" or not num_classes or num_classes < 2:
        return None
    chance = 1.0 / num_classes
    if metric > chance + CHANCE_MARGIN:
        return None
    return (
        f"metric: the base model's accuracy {metric:.4f} is at chance level for {num_classes} classes "
        f"({chance:.4f}); the labels may not match the data or the model's outputs"
    )


def _checked(evaluator: object) -> CandidateEvaluator:
    return cast(CandidateEvaluator, check_evaluator(evaluator, key="evaluator"))


def _evaluator(config: Config, resolved: Resolved, evaluator: object | None) -> tuple[CandidateEvaluator, bool]:
    """The evaluator given, else the config's ``evaluator: "pkg:factory"``, else the built-in one (whose teacher,
    for distillation, is the base model: ``resolved.model``, trained in place); and whether it is the user's."""
    if evaluator is not None:
        return _checked(evaluator), True
    data = resolved.data
    common: dict[str, Any] = {"train_loader": data.train, "val_loader": data.val, "metric": resolved.metric}
    if config.evaluator is not None:
        user = load_user_evaluator(
            config.evaluator, dict(config.evaluator_options), search_paths=factory_search_paths(config), **common
        )
        return _checked(user), True
    built = build_evaluator(
        config, runtime=resolved.runtime, teacher=resolved.model, section="finetune", search_paths=factory_search_paths(config), **common
    )
    return _checked(built), False


def prepare_task(
    config: Config, log: Log = lambda _: None, *, resolved: Resolved | None = None, evaluator: object | None = None
) -> Task:
    """Resolve the config (writing nothing) unless given ``resolved``, then create the run folder and produce
    the base model, on the configured device. The base model's metric is checked before its weights are
    cached; if that or its training fails, a run folder this call created is removed again.

    ``evaluator`` (an object with ``recalibrate``, ``finetune`` and ``score``) replaces the config's
    ``evaluator`` and the built-in one."""
    resolved = resolved or resolve(config)
    config, fitted = fit_budgets(config, resolved)  # before any training: MACs and params need no weights
    runtime = resolved.runtime
    for warning in [*resolved.warnings, *fitted]:
        log(f"warning: {warning}")
    task_evaluator, user = _evaluator(config, resolved, evaluator)
    scores: list[float] = []
    with removed_if_failed(config.output):
        base = trained_base(
            config,
            resolved.model,
            resolved.data,
            log,
            check=lambda m: scores.append(_base_metric(config, task_evaluator, m, user=user)),
            runtime=runtime,
            search_paths=factory_search_paths(config),
        )
    base = runtime.place(base)  # trained or loaded where it stands; placed again in case the user's code moved it
    base_metric = scores[-1]
    chance = _chance_warning(config, resolved.data, base_metric)
    if chance is not None:
        log(f"warning: {chance}")
    macs, params = count_macs_params(base, resolved.example_inputs)
    table = None
    if needs_latency_table(config):
        table = latency_table(config, runtime, base, resolved.example_inputs, resolved.groups, log=log)
    # Fixed batches in dataset order, so a gradient criterion scores the same plan the same way every time.
    batches = (
        [runtime.to_device(b) for b in fixed_batches(resolved.data.train, config.prune.gradient_batches)]
        if any(needs_gradients(c) for c in config.prune.criteria)
        else []
    )
    space = _search_space(config, resolved, base, (macs, params), batches, table)
    trained = TrainedBase(
        model=base,
        example_inputs=resolved.example_inputs,
        groups=resolved.groups,
        macs=macs,
        params=params,
        metric=base_metric,
        layers=resolved.layers,
        nonzero_params=count_nonzero_params(base),
        compressed_bytes=compressed_bytes(base) if config.prune.unstructured_mode else 0,
    )
    return Task(
        config=config,
        base=trained,
        data=resolved.data,
        evaluator=task_evaluator,
        space=space,
        runtime=runtime,
        gradient_batches=batches,
        latency_table=table,
    )


def _search_space(
    config: Config, resolved: Resolved, base: nn.Module, counts: tuple[int, int], batches: list[Any], table: LatencyTable | None
) -> SearchSpace:
    """The trial -> plan space: the preset's knobs over the resolved groups, with what ranking and budgets need,
    and (``prune.round_to: auto``) the latency table's steps."""
    bounds = resolved.bounds
    return SearchSpace(
        spec=resolved.spec,
        groups=tuple(g.name for g in resolved.groups if not bounds or g.name in bounds),
        ratio=tuple(config.prune.ratio),  # type: ignore[arg-type]
        criteria=tuple(config.prune.criteria),
        round_to=config.prune.channel_multiple,
        steps=table.steps() if table is not None and config.prune.round_to == "auto" else {},
        scope=config.prune.scopes,
        bounds=bounds,
        sparsity=_sparsity_space(config, resolved),
        **_ranking_inputs(config, resolved, base, counts, batches, table),
    )


def _ranking_inputs(
    config: Config, resolved: Resolved, base: nn.Module, counts: tuple[int, int], batches: list[Any], table: LatencyTable | None
) -> dict[str, Any]:
    """``ratio_schedule: global_rank`` and the budgeted search: the base model's normalised channel importances,
    computed once, and what measures a plan's relative MACs (global_rank's MACs target) or relative cost (the
    budgets)."""
    spec = resolved.spec
    budgeted = config.study.search == "budgeted"
    if not resolved.groups or (not get_ratio_schedule(spec).needs_importances and not budgeted):
        return {}
    try:
        importances = importance_table(
            base, resolved.example_inputs, resolved.groups, config.prune.criteria, config.prune.scopes,
            normalizer=spec.normalizer, gradient_batches=batches,
        )  # fmt: skip
    except PruningError as exc:  # a criterion that cannot be ranked before the plan (random)
        raise ConfigError(str(exc), key="prune.criteria") from None
    macs_of = relative_macs(base, resolved.example_inputs, counts, gradient_batches=batches) if spec.target == "macs" else None
    if not budgeted:
        return {"importances": importances, "macs_of": macs_of}
    return {
        "importances": importances,
        "macs_of": macs_of,
        "budgets": tuple(config.study.budgets),
        "cost_of": _cost_of(config, resolved, base, counts, batches, table),
    }


def fit_budgets(config: Config, resolved: Resolved) -> tuple[Config, list[str]]:
    """``config`` with the budgeted search's budgets checked against what prune.ratio can reach, and the warnings.

    A budget the config names that cannot be reached is one ConfigError; a default budget that cannot (a small
    model, a tight prune.ratio) is dropped with a warning. Checked on the resolved model's structure, before any
    training (MACs and params need no weights; latency, which needs the trained model timed, when the task is
    built)."""
    study = config.study
    if study.search != "budgeted":
        return config, []
    if config.prune.unstructured_mode:
        raise ConfigError(
            "the budgeted search projects channel allocations onto cost budgets; prune.mode unstructured needs "
            "study.search: single (or staged)",
            key="study.search",
        )
    if not resolved.groups or config.objectives[1] == "latency":
        return config, []
    counts = count_macs_params(resolved.model, resolved.example_inputs)
    bounds = resolved.bounds
    most = PruningPlan(
        {g.name: (bounds.get(g.name, config.prune.ratio)[1], config.prune.criteria[0]) for g in resolved.groups
         if not bounds or g.name in bounds},
        round_to=config.prune.channel_multiple,
        scope=config.prune.scopes[0],
    )  # fmt: skip
    floor = _cost_of(config, resolved, resolved.model, counts, [], None)(most)
    out_of_reach = [b for b in study.budgets if b < floor]
    if not out_of_reach:
        return config, []
    why = (
        f"removing the most channels prune.ratio allows leaves {floor:.4f} of the {config.objectives[1]}; raise "
        "prune.ratio's upper bound"
    )
    if "budgets" in study.model_fields_set or len(out_of_reach) == len(study.budgets):
        raise ConfigError(f"budget {out_of_reach[0]:g} cannot be reached: {why} or drop the budget", key="study.budgets")
    kept = [b for b in study.budgets if b >= floor]
    warning = (
        f"study.budgets: the default budgets {', '.join(f'{b:g}' for b in out_of_reach)} cannot be reached ({why}); "
        f"searching {', '.join(f'{b:g}' for b in kept)}"
    )
    return config.model_copy(update={"study": study.model_copy(update={"budgets": kept})}), [warning]


def _cost_of(
    config: Config, resolved: Resolved, base: nn.Module, counts: tuple[int, int], batches: list[Any], table: LatencyTable | None
) -> Callable[[PruningPlan], float]:
    """``cost_of(plan)``: the relative cost (``objectives[1]``, a registered cost) of ``plan`` applied to ``base``,
    as a trial measures it (latency with a meter of its own, in this process's memory, or predicted off
    ``table``)."""
    cost = get_cost(config.objectives[1], search_paths=factory_search_paths(config))
    meter = None
    if config.objectives[1] == "latency":
        channels = {g.name: g.channels for g in resolved.groups}
        paths = factory_search_paths(config)
        meter = LatencyMeter(
            config.latency, resolved.runtime, base, resolved.example_inputs, channels, cache=MemoryCache(),
            search_paths=paths, table=table,
        )  # fmt: skip

    known: dict[str, float] = {}  # a cost depends on the channels kept alone: the criteria do not change it

    def cost_of(plan: PruningPlan) -> float:
        key = json.dumps({name: entry.ratio for name, entry in plan.groups.items()}, sort_keys=True)
        if key not in known:
            pruned, report = apply_plan(base, resolved.example_inputs, plan, base_counts=counts, gradient_batches=batches)
            known[key] = cost(Candidate(pruned, report, meter)).relative
        return known[key]

    return cost_of


def _sparsity_space(config: Config, resolved: Resolved) -> SparsitySpace | None:
    if not config.prune.unstructured_mode:
        return None
    return SparsitySpace(
        layers=tuple(resolved.layers),
        bounds=tuple(config.prune.unstructured.sparsity),  # type: ignore[arg-type]
        methods=tuple(config.prune.unstructured.methods),
        granularity=resolved.spec.ratio,
        stage_depth=resolved.spec.stage_depth,
    )
