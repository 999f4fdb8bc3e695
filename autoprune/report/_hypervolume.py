"""2-D hypervolume of a metric-vs-cost front, against a fixed reference point.

The reference point is fixed, not taken from the data, so numbers are comparable across studies and samplers:
``(metric 0, relative cost 1.0)``, i.e. a model that scores nothing and saves nothing. The hypervolume is then
the area (metric x relative cost) that the front dominates inside ``[0, best metric] x [cost, 1]``; for
accuracy it lies in [0, 1], and 1 would be a perfect model that costs nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

__all__ = ["REFERENCE_POINT", "hypervolume", "hypervolume_history"]

REFERENCE_POINT: tuple[float, float] = (0.0, 1.0)  # (metric, relative MACs or params)


def hypervolume(points: Iterable[Sequence[float]], reference: Sequence[float] = REFERENCE_POINT) -> float:
    """Area dominated by ``(metric, cost)`` points (metric maximised, cost minimised) up to ``reference``.

    Points that do not beat the reference on both axes add nothing; dominated points are harmless.
    """
    ref_metric, ref_cost = float(reference[0]), float(reference[1])
    kept: list[tuple[float, float]] = []
    for point in points:
        if len(point) != 2:
            raise ValueError(f"a point is (metric, cost), found {tuple(point)!r}")
        metric, cost = float(point[0]), float(point[1])
        if not (math.isfinite(metric) and math.isfinite(cost)):
            raise ValueError(f"points must be finite, found ({metric}, {cost})")
        if metric > ref_metric and cost < ref_cost:
            kept.append((cost, metric))
    kept.sort()
    area, best = 0.0, ref_metric
    # Sweep along the cost axis: between two consecutive costs, the dominated height is the best metric so far.
    for index, (cost, metric) in enumerate(kept):
        best = max(best, metric)
        next_cost = kept[index + 1][0] if index + 1 < len(kept) else ref_cost
        area += (next_cost - cost) * (best - ref_metric)
    return area


def hypervolume_history(
    trials: Iterable[tuple[int, float, float]], reference: Sequence[float] = REFERENCE_POINT
) -> list[tuple[int, float]]:
    """``(trial number, hypervolume of every point up to it)`` for ``(number, metric, cost)`` in any order."""
    ordered = sorted(trials, key=lambda t: t[0])
    history: list[tuple[int, float]] = []
    seen: list[tuple[float, float]] = []
    for number, metric, cost in ordered:
        seen.append((metric, cost))
        history.append((int(number), hypervolume(seen, reference)))
    return history
