"""Gradual pruning schedules: which fraction of the plan's ratios and sparsities each of K steps reaches.

A schedule is a registered callable ``schedule(steps, exponent) -> fractions``; its last fraction is 1, so the
last step lands exactly on the plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from autoprune._registry import Registry

__all__ = ["SCHEDULES", "Schedule", "step_fractions"]

Schedule = Callable[[int, float], list[float]]

SCHEDULES: Registry[Schedule] = Registry("pruning schedule")


@SCHEDULES.register("linear")
def linear_schedule(steps: int, exponent: float = 1.0) -> list[float]:
    """Step k of K reaches k/K (torch-pruning's ``iterative_steps``); the exponent is not used."""
    return [(k + 1) / steps for k in range(steps)]


@SCHEDULES.register("polynomial")
def polynomial_schedule(steps: int, exponent: float = 3.0) -> list[float]:
    """Step k of K reaches ``1 - (1 - k/K) ** exponent``: Zhu & Gupta (2017), from initial sparsity 0."""
    return [1.0 - (1.0 - (k + 1) / steps) ** exponent for k in range(steps)]


def step_fractions(steps: int, kind: str = "linear", exponent: float = 3.0) -> list[float]:
    """The fraction of the plan reached after each step; the last is always 1."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"a schedule needs a positive number of steps, found {steps!r}")
    fractions = SCHEDULES.get(kind, key="export.schedule.kind")(steps, exponent)
    if len(fractions) != steps or abs(fractions[-1] - 1.0) > 1e-12 or any(
        b < a for a, b in itertools.pairwise(fractions)
    ):
        raise ValueError(
            f"schedule {kind!r} gave {fractions} for {steps} steps; expected {steps} non-decreasing values ending at 1"
        )
    return fractions
