"""Allocation optimizers of the budgeted search: from one budget's screened allocations to the next round's.

An optimizer is a registered class; ``propose(distributions, history, count, seed)`` returns ``count`` params
(every name of ``distributions``), a pure function of its arguments, so that every worker and a resumed search
propose the same round. ``history`` holds (params, screen score) of the finished rounds, higher is better.

- ``tpe``: Optuna's TPESampler (multivariate, constant liar) over an in-memory study of the history;
- ``cmaes``: Optuna's CmaEsSampler on the scales (log space), categorical knobs sampled independently;
- ``evolution``: regularised evolution (Real et al., 2019): tournament among the most recent ``population``
  screens, the winner mutated (log-normal scale noise, one categorical redrawn now and then);
- ``random``: independent uniform draws.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution

from autoprune._registry import Registry

__all__ = ["ALLOCATION_OPTIMIZERS", "AllocationOptimizer", "History", "optuna_distribution"]

Distribution = tuple[Any, ...]
History = Sequence[tuple[Mapping[str, Any], float]]


class AllocationOptimizer(Protocol):
    def propose(
        self, distributions: Mapping[str, Distribution], history: History, count: int, seed: int
    ) -> list[dict[str, Any]]: ...


ALLOCATION_OPTIMIZERS: Registry[type[AllocationOptimizer]] = Registry("allocation optimizer")


def optuna_distribution(dist: Distribution) -> BaseDistribution:
    kind, *args = dist
    if kind == "categorical":
        return CategoricalDistribution(list(args[0]))
    return FloatDistribution(float(args[0]), float(args[1]), log=kind == "log_float")


def _contained(params: Mapping[str, Any], dists: Mapping[str, BaseDistribution]) -> bool:
    for name, dist in dists.items():
        if name not in params:
            return False
        try:
            if not dist._contains(dist.to_internal_repr(params[name])):
                return False
        except ValueError:
            return False
    return True


class _OptunaSampled:
    """Propose by asking an Optuna sampler over an in-memory single-objective study of the history."""

    def sampler(self, seed: int, startup: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def propose(
        self, distributions: Mapping[str, Distribution], history: History, count: int, seed: int
    ) -> list[dict[str, Any]]:
        dists = {name: optuna_distribution(d) for name, d in distributions.items()}
        seen = [(p, s) for p, s in history if _contained(p, dists) and math.isfinite(s)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental-feature and independent-sampling notes
            study = optuna.create_study(direction="maximize", sampler=self.sampler(seed, startup=4))
            for params, score in seen:
                study.add_trial(
                    optuna.trial.create_trial(
                        params={n: params[n] for n in dists}, distributions=dists, value=float(score)
                    )
                )
            proposals = []
            for _ in range(count):
                trial = study.ask(dists)
                proposals.append(dict(trial.params))
        return proposals


@ALLOCATION_OPTIMIZERS.register("tpe")
class TPEOptimizer(_OptunaSampled):
    def sampler(self, seed: int, startup: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, multivariate=True, constant_liar=True)


@ALLOCATION_OPTIMIZERS.register("cmaes")
class CmaEsOptimizer(_OptunaSampled):
    def sampler(self, seed: int, startup: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.CmaEsSampler(
            seed=seed, n_startup_trials=startup, warn_independent_sampling=False,
            independent_sampler=optuna.samplers.RandomSampler(seed=seed),
        )  # fmt: skip


def _draw(dist: Distribution, rng: np.random.Generator) -> Any:
    kind, *args = dist
    if kind == "categorical":
        choices = list(args[0])
        return choices[int(rng.integers(len(choices)))]
    low, high = float(args[0]), float(args[1])
    if kind == "log_float":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


@ALLOCATION_OPTIMIZERS.register("random")
class RandomOptimizer:
    def propose(
        self, distributions: Mapping[str, Distribution], history: History, count: int, seed: int
    ) -> list[dict[str, Any]]:
        rng = np.random.default_rng(seed)
        return [{name: _draw(d, rng) for name, d in distributions.items()} for _ in range(count)]


@ALLOCATION_OPTIMIZERS.register("evolution")
class EvolutionOptimizer:
    """Regularised evolution: the parent is the best of ``tournament`` screens drawn from the ``population``
    most recent ones; each scale is multiplied by exp(N(0, ``sigma``)) (clipped into its range), and each
    categorical knob is redrawn with probability ``flip``."""

    population = 16
    tournament = 4
    sigma = 0.35
    flip = 0.2

    def propose(
        self, distributions: Mapping[str, Distribution], history: History, count: int, seed: int
    ) -> list[dict[str, Any]]:
        rng = np.random.default_rng(seed)
        recent = [(p, s) for p, s in history if all(n in p for n in distributions) and math.isfinite(s)]
        recent = recent[-self.population :]
        if len(recent) < 2:
            return RandomOptimizer().propose(distributions, history, count, seed)
        proposals = []
        for _ in range(count):
            picks = rng.choice(len(recent), size=min(self.tournament, len(recent)), replace=False)
            parent = max((recent[int(i)] for i in picks), key=lambda entry: entry[1])[0]
            proposals.append({name: self._mutate(parent[name], d, rng) for name, d in distributions.items()})
        return proposals

    def _mutate(self, value: Any, dist: Distribution, rng: np.random.Generator) -> Any:
        kind, *args = dist
        if kind == "categorical":
            return _draw(dist, rng) if rng.random() < self.flip else value
        low, high = float(args[0]), float(args[1])
        if kind == "log_float":
            return float(min(max(float(value) * math.exp(rng.normal(0.0, self.sigma)), low), high))
        return float(min(max(float(value) + rng.normal(0.0, self.sigma * (high - low)), low), high))
