"""``AutoPruner``: autoprune's search behind the call shape of NNI's pruners, for NNI users' code."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import optuna
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from torch import nn

from autoprune.config import SpaceSpec, validation_error
from autoprune.config._types import Sampler
from autoprune.criteria import CRITERIA, needs_gradients
from autoprune.engine import LossFn, apply_plan, count_macs_params, find_groups
from autoprune.errors import ConfigError, did_you_mean
from autoprune.plan import PruningPlan
from autoprune.space import SearchSpace, config_list_bounds, load_space_spec, parse_config_list
from autoprune.study import make_sampler, open_storage

__all__ = ["AutoPruner", "Evaluator", "SearchOptions"]


@dataclass(frozen=True)
class Evaluator:
    """Training and evaluation as plain callables, as NNI's ``TorchEvaluator`` takes them.

    ``training_func(model)`` fine-tunes a pruned candidate in place (None: no fine-tuning);
    ``evaluating_func(model) -> float`` scores it, higher is better. ``gradient_batches`` of
    ``(inputs, targets)`` (and ``loss_fn``, default cross-entropy) feed gradient criteria such as ``taylor``.
    """

    evaluating_func: Callable[[nn.Module], float]
    training_func: Callable[[nn.Module], Any] | None = None
    gradient_batches: Sequence[Any] | None = None
    loss_fn: LossFn | None = None

    def __post_init__(self) -> None:
        # Checked here, not at the first trial of compress(): a typo should fail where it was written.
        for name, optional in (("evaluating_func", False), ("training_func", True), ("loss_fn", True)):
            value = getattr(self, name)
            if not callable(value) and not (optional and value is None):
                expected = "a callable or None" if optional else "a callable"
                raise ConfigError(f"expected {expected}, found {type(value).__name__}", key=name)
        if self.gradient_batches is not None and not isinstance(self.gradient_batches, Iterable):
            raise ConfigError(
                f"expected an iterable of (inputs, targets) batches, found {type(self.gradient_batches).__name__}",
                key="gradient_batches",
            )


_Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]


class SearchOptions(BaseModel):
    """The ``search={...}`` argument of :class:`AutoPruner`; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_trials: int = Field(default=30, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    criteria: list[str] = Field(default_factory=lambda: ["l1", "l2", "fpgm"], min_length=1)
    ratio: tuple[_Ratio, _Ratio] = (0.0, 0.9)  # bounds for entries with neither sparse_ratio nor min/max
    search_space: str | SpaceSpec = "per_layer"
    criteria_scope: Literal["layer", "group"] = "layer"
    round_to: int = Field(default=1, ge=1)
    objective: Literal["macs", "params"] = "macs"
    max_macs: float | None = Field(default=None, gt=0.0, le=1.0)  # relative to the unpruned model
    sampler: Sampler = "tpe"
    seed: int = 0
    storage: str | None = None  # an Optuna storage URL; None keeps the study in memory
    study_name: str = Field(default="autoprune-nni", min_length=1)

    @field_validator("ratio")
    @classmethod
    def _ordered(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] > v[1]:
            raise ValueError(f"ratio bounds are reversed: [{v[0]}, {v[1]}]; expected [low, high] with low <= high")
        return v

    @field_validator("criteria")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in CRITERIA:
                raise ValueError(f"unknown criterion {name!r}{did_you_mean(name, CRITERIA.names())}; known: {', '.join(CRITERIA.names())}")
        return names


class AutoPruner:
    """Search per-group pruning ratios and criteria for the groups an NNI ``config_list`` selects.

    ``compress()`` returns the best pruned (and, through ``training_func``, fine-tuned) model and its
    :class:`~autoprune.plan.PruningPlan`: the highest ``evaluating_func`` score among trials within
    ``search["max_macs"]`` (all trials when it is None; equal scores go to the cheaper model). Channels are
    removed by the DepGraph engine; NNI's ModelSpeedup is never used, and NNI need not be installed.
    The whole study (its Pareto front) is ``pruner.study`` afterwards.
    """

    def __init__(
        self,
        model: nn.Module,
        config_list: Sequence[Mapping[str, Any]],
        evaluator: Evaluator,
        dummy_input: Any,
        search: Mapping[str, Any] | SearchOptions | None = None,
    ) -> None:
        # Every argument is checked here, each error naming it, so that compress() fails only on what a search
        # finds (no trial within max_macs), never on a typo made at construction.
        if not isinstance(model, nn.Module):
            raise ConfigError(f"expected a torch.nn.Module, found {type(model).__name__}", key="model")
        if not isinstance(evaluator, Evaluator):
            raise ConfigError(
                f"expected autoprune.nni.Evaluator(evaluating_func, training_func), found {type(evaluator).__name__}",
                key="evaluator",
            )
        if search is not None and not isinstance(search, (Mapping, SearchOptions)):
            raise ConfigError(f"expected a mapping of search options, found {type(search).__name__}", key="search")
        try:
            self.options = search if isinstance(search, SearchOptions) else SearchOptions.model_validate(dict(search or {}))
        except ValidationError as exc:
            raise validation_error(exc, SearchOptions, prefix="search") from None
        gradient_users = [c for c in self.options.criteria if needs_gradients(c)]
        if gradient_users and evaluator.gradient_batches is None:
            raise ConfigError(
                f"criterion {gradient_users[0]!r} in search.criteria needs gradients: "
                "pass Evaluator(gradient_batches=[(inputs, targets), ...])",
                key="evaluator.gradient_batches",
            )
        self.model = model
        self.evaluator = evaluator
        self.dummy_input = dummy_input
        self.entries = parse_config_list(config_list, key="config_list")
        self.groups = find_groups(model, dummy_input)
        module_types = {n: type(m).__name__ for n, m in model.named_modules() if n}
        opts = self.options
        bounds = config_list_bounds(self.entries, self.groups, module_types, opts.ratio, key="config_list")
        self.space = SearchSpace(
            spec=load_space_spec(opts.search_space, key="search.search_space"),
            groups=tuple(bounds),
            ratio=opts.ratio,
            criteria=tuple(opts.criteria),
            round_to=opts.round_to,
            scope=opts.criteria_scope,
            bounds=bounds,
        )
        self.base_counts = count_macs_params(model, dummy_input)
        self.storage = None if opts.storage is None else _open_storage(opts.storage)
        self.study: optuna.Study | None = None
        self._best: tuple[float, float, nn.Module, PruningPlan] | None = None

    def _objective(self, trial: optuna.Trial) -> tuple[float, float]:
        plan = self.space.sample(trial)
        trial.set_user_attr("plan", plan.to_dict())
        pruned, report = apply_plan(
            self.model,
            self.dummy_input,
            plan,
            base_counts=self.base_counts,
            gradient_batches=self.evaluator.gradient_batches,
            loss_fn=self.evaluator.loss_fn,
        )
        cost = report.macs_ratio if self.options.objective == "macs" else report.params_ratio
        trial.set_user_attr("macs_relative", report.macs_ratio)
        trial.set_user_attr("params_relative", report.params_ratio)
        max_macs = self.options.max_macs
        feasible = max_macs is None or report.macs_ratio <= max_macs
        if max_macs is not None:
            trial.set_constraint("max_macs", report.macs_ratio - max_macs)
        if feasible and self.evaluator.training_func is not None:
            self.evaluator.training_func(pruned)
        metric = float(self.evaluator.evaluating_func(pruned))
        if not math.isfinite(metric):
            raise FloatingPointError(f"evaluating_func returned {metric}; a non-finite score cannot be compared")
        if feasible and (self._best is None or (metric, -cost) > (self._best[0], -self._best[1])):
            self._best = (metric, cost, pruned, plan)
        return metric, cost

    def compress(self) -> tuple[nn.Module, PruningPlan]:
        """Run the search; return ``(pruned_model, plan)``. The model given to the constructor is untouched."""
        opts = self.options
        self._best = None
        with _quiet_optuna():
            self.study = optuna.create_study(
                directions=["maximize", "minimize"],
                sampler=make_sampler(opts.sampler, opts.seed),
                storage=self.storage,
                study_name=opts.study_name,
                load_if_exists=opts.storage is not None,
            )
            for params in self.space.warm_start():
                self.study.enqueue_trial(params, skip_if_exists=True)
            self.study.optimize(self._objective, n_trials=opts.n_trials, timeout=opts.timeout, gc_after_trial=False)
        if self._best is None:
            raise ConfigError(
                f"no trial of {opts.n_trials} met max_macs {opts.max_macs}; raise the ratio bounds or n_trials",
                key="search.max_macs",
            )
        return self._best[2], self._best[3]


def _open_storage(url: str) -> optuna.storages.BaseStorage:
    """The storage, connected now: a bad URL or a missing driver is an error of ``search.storage`` at construction."""
    try:
        return open_storage(url)
    except ConfigError as exc:
        raise ConfigError(exc.detail, key="search.storage") from None


class _quiet_optuna:
    """Optuna's per-trial INFO lines off for the duration, as NNI pruners print little."""

    def __enter__(self) -> None:
        self._level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        optuna.logging.set_verbosity(self._level)

