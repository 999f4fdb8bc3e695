from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from autoprune.errors import ConfigError

__all__ = ["DIRECTIONS", "make_sampler", "open_study"]

DIRECTIONS = ("maximize", "minimize")


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"unknown sampler {name!r}; known: tpe, nsga2, random, gp", key="study.sampler")


def open_study(
    storage: str,
    study_name: str,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    metric_names: Sequence[str] | None = None,
    create: bool = True,
) -> optuna.Study:
    """Create or load the study by name (``load_if_exists``), or only load it when ``create`` is False."""
    try:
        if create:
            study = optuna.create_study(
                storage=storage,
                study_name=study_name,
                directions=list(DIRECTIONS),
                sampler=sampler,
                load_if_exists=True,
            )
        else:
            study = optuna.load_study(storage=storage, study_name=study_name, sampler=sampler)
    except KeyError:
        raise ConfigError(f"no study named {study_name!r} in storage {storage!r}; run `autoprune search` first") from None
    except (ImportError, ModuleNotFoundError) as exc:
        raise ConfigError(f"storage {storage!r} needs a driver that is not installed: {exc}", key="study.storage") from None
    except Exception as exc:  # SQLAlchemy raises many types for a bad URL or an unreachable server
        first = " ".join(str(exc).split())[:200]
        raise ConfigError(f"cannot open storage {storage!r}: {type(exc).__name__}: {first}", key="study.storage") from None
    if metric_names is not None and study.metric_names != list(metric_names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study
