"""A budgeted study, budget by budget: the plan it selects at each budget, and how well screening predicted the
fine-tuned scores there (the fidelity check)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
from optuna.trial import FrozenTrial, TrialState

from autoprune.study._budgeted import SLOT_ATTR, budget_of
from autoprune.study._frame import FIDELITY_ATTR, SCREEN
from autoprune.study._staged import STAGE_ATTR

__all__ = [
    "FIDELITY_WARNING",
    "BudgetSummary",
    "budget_summaries",
    "budget_winner",
    "fidelity_warning",
    "kendall_tau",
    "spearman_rho",
    "summary_lines",
]

FIDELITY_WARNING = 0.3  # below this rank correlation, screening says little about the fine-tuned score


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson's on mean ranks); nan with fewer than 3 pairs or a constant side."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    if len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx, syy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties counted as neither concordant nor discordant); nan as :func:`spearman_rho`."""
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} and {len(y)}")
    if len(x) < 3:
        return math.nan
    concordant = discordant = ties_x = ties_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                ties_x += 1
            elif dy == 0:
                ties_y += 1
            elif (dx > 0) == (dy > 0):
                concordant += 1
            else:
                discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator > 0 else math.nan


def _complete(trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None]


def _finalists(trials: Sequence[FrozenTrial], rung: int | None = None) -> list[FrozenTrial]:
    found = []
    for trial in _complete(trials):
        slot = trial.user_attrs.get(SLOT_ATTR)
        if isinstance(slot, dict) and slot.get("kind") == "finalist" and (rung is None or slot.get("rung") == rung):
            found.append(trial)
    return found


def budget_winner(trials: Sequence[FrozenTrial], budget: float) -> FrozenTrial | None:
    """The plan a budgeted study selects at ``budget``: the best feasible finalist of the highest rung reached
    (the longest fine-tune; earlier rungs were shorter, so their scores are not compared with it)."""
    mine = [t for t in _finalists(trials) if budget_of(t) == budget and t.user_attrs.get("feasible") is not False]
    if not mine:
        return None
    top = max(int(t.user_attrs[SLOT_ATTR]["rung"]) for t in mine)
    best = [t for t in mine if t.user_attrs[SLOT_ATTR]["rung"] == top]
    return min(best, key=lambda t: (-t.values[0], t.values[1], t.number))


@dataclass(frozen=True)
class BudgetSummary:
    budget: float
    screens: int
    finalists: int
    winner: FrozenTrial | None
    spearman: float  # screen score against the rung-0 fine-tuned score, over the rung-0 finalists
    kendall: float
    pairs: int

    @property
    def uninformative(self) -> bool:
        return not math.isnan(self.spearman) and self.spearman < FIDELITY_WARNING


def budget_summaries(study: optuna.Study) -> list[BudgetSummary]:
    """One summary per budget the study's trials were built at, largest budget first."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    budgets = sorted({b for t in trials if (b := budget_of(t)) is not None}, reverse=True)
    summaries = []
    for budget in budgets:
        mine = [t for t in trials if budget_of(t) == budget]
        screens = [t for t in _complete(mine) if t.user_attrs.get(FIDELITY_ATTR) == SCREEN]
        pairs = []
        for finalist in _finalists(mine, rung=0):
            source = by_number.get(int(finalist.user_attrs.get(STAGE_ATTR, {}).get("source", -1)))
            if source is not None and source.values is not None:
                pairs.append((float(source.values[0]), float(finalist.values[0])))
        xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
        summaries.append(
            BudgetSummary(
                budget,
                len(screens),
                len(_finalists(mine)),
                budget_winner(mine, budget),
                spearman_rho(xs, ys),
                kendall_tau(xs, ys),
                len(pairs),
            )
        )
    return summaries


def fidelity_warning(summary: BudgetSummary) -> str | None:
    """One line when screening ranked this budget's finalists poorly (Spearman below 0.3)."""
    if not summary.uninformative:
        return None
    return (
        f"warning: at budget {summary.budget:g} the screen score ranks the fine-tuned score with Spearman "
        f"{summary.spearman:.2f} (< {FIDELITY_WARNING}): the screen is not informative here; spend more on fine-tunes "
        "(lower study.stages.screen.share)"
    )


def summary_lines(study: optuna.Study) -> list[str]:
    """Per budget: the selected plan and the screen's fidelity, then a warning where it is uninformative."""
    lines, warnings = [], []
    for summary in budget_summaries(study):
        winner = summary.winner
        chosen = "no finalist yet"
        if winner is not None:
            chosen = f"trial {winner.number}, metric {winner.values[0]:.4f}, cost {winner.values[1]:.3f}"
        rho = "n/a" if math.isnan(summary.spearman) else f"{summary.spearman:.2f}"
        tau = "n/a" if math.isnan(summary.kendall) else f"{summary.kendall:.2f}"
        lines.append(
            f"  budget {summary.budget:g}: {chosen}; screen fidelity Spearman {rho}, Kendall {tau} "
            f"over {summary.pairs} finalists"
        )
        warning = fidelity_warning(summary)
        if warning is not None:
            warnings.append(warning)
    return lines + warnings

