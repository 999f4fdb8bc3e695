"""The latency table's fitted prediction: ``log latency = c + a log M (+ b log deviation)`` by least squares,
the deviation term kept only where leave-one-out says it helps. Plain floats, no dependency."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["select_fit"]


def _least_squares(rows: Sequence[tuple[float, ...]], features: int) -> tuple[float, ...]:
    """``(c, a[, b])`` minimising the squared error of ``y = c + a x1 (+ b x2)`` over ``rows`` ``(x1, x2, y)``."""
    n = features + 1
    matrix = [[0.0] * n for _ in range(n)]
    vector = [0.0] * n
    for row in rows:
        x = (1.0, *row[:features])
        for i in range(n):
            vector[i] += x[i] * row[-1]
            for j in range(n):
                matrix[i][j] += x[i] * x[j]
    for i in range(n):
        matrix[i][i] += 1e-9  # a feature that never varies gets 0, not a singular matrix
    return tuple(_solve(matrix, vector))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (two or three unknowns)."""
    n = len(vector)
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(matrix[r][col]))
        matrix[col], matrix[pivot], vector[col], vector[pivot] = matrix[pivot], matrix[col], vector[pivot], vector[col]
        for r in range(col + 1, n):
            f = matrix[r][col] / matrix[col][col]
            vector[r] -= f * vector[col]
            for c in range(col, n):
                matrix[r][c] -= f * matrix[col][c]
    out = [0.0] * n
    for r in reversed(range(n)):
        out[r] = (vector[r] - sum(matrix[r][c] * out[c] for c in range(r + 1, n))) / matrix[r][r]
    return out


def select_fit(rows: Sequence[tuple[float, float, float]]) -> tuple[float, float, float]:
    """The MACs-only fit, or with the deviations when that lowers the leave-one-out median absolute error."""

    def loo(features: int) -> float:
        errors = []
        for i, row in enumerate(rows):
            coef = _least_squares([r for j, r in enumerate(rows) if j != i], features)
            guess = coef[0] + sum(c * x for c, x in zip(coef[1:], row[:features], strict=True))
            errors.append(abs(guess - row[-1]))
        return statistics.median(errors)

    if loo(2) < loo(1):
        c, a, b = _least_squares(rows, 2)
        return c, a, b
    c, a = _least_squares(rows, 1)
    return c, a, 0.0
