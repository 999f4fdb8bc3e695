"""The report's figures, drawn with matplotlib's Agg canvas: no display, no pyplot state, safe in threads."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoprune.errors import ConfigError
from autoprune.report._collect import ReportData
from autoprune.report._hypervolume import REFERENCE_POINT
from autoprune.study import atomic_write_bytes

__all__ = ["latency_figure", "pareto_figure", "pareto_x_scale", "plot_hypervolume", "plot_latency", "plot_pareto", "plot_ratios"]

XScale = Literal["auto", "linear", "log"]
LOG_SPAN = 10.0  # a front whose costs span more than this factor gets a log cost axis ("auto")
LABEL_GAP_PX = (34.0, 13.0)  # a front label is skipped when its point is this close (x, y) to a labelled one

FRONT_COLOR = "#d62728"
TRIAL_COLOR = "#1f77b4"
BASELINE_COLOR = "#ff7f0e"
INFEASIBLE_COLOR = "#9a9a9a"


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _empty(axes, message: str) -> None:
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#555555")
    axes.set_xticks([])
    axes.set_yticks([])


def pareto_x_scale(front_costs: Iterable[float], x_scale: XScale = "auto") -> str:
    """``linear`` or ``log``; ``auto`` is ``log`` when the front's costs span more than a decade (max/min > 10)."""
    if x_scale in ("linear", "log"):
        return x_scale
    if x_scale != "auto":
        raise ConfigError(f"x_scale must be 'auto', 'linear' or 'log', found {x_scale!r}", key="x_scale")
    positive = [float(c) for c in front_costs if math.isfinite(float(c)) and float(c) > 0.0]
    return "log" if positive and max(positive) / min(positive) > LOG_SPAN else "linear"


def plot_pareto(data: ReportData, path: Path, *, x_scale: XScale = "auto") -> Path:
    """Write :func:`pareto_figure` as a PNG."""
    return _save(pareto_figure(data, x_scale=x_scale), path)


def pareto_figure(data: ReportData, *, x_scale: XScale = "auto") -> Figure:
    """The metric against relative cost: trials faint, uniform baselines, infeasible greyed, the front, the base.

    ``x_scale`` ``auto`` draws cost on a log axis when the front spans more than a decade, where a linear axis
    piles the cheap end of the front (and its labels) into one corner.
    """
    figure = Figure(figsize=(7.5, 5.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    scale = pareto_x_scale(data.front_trials["cost"] if not data.front_trials.empty else [], x_scale)
    scored = data.scored
    if not scored.empty:
        feasible, warm = scored["feasible"].astype(bool), scored["warm_start"].astype(bool)
        sampled, baselines, infeasible = scored[feasible & ~warm], scored[feasible & warm], scored[~feasible]
        axes.scatter(sampled["cost"], sampled["metric"], s=22, color=TRIAL_COLOR, alpha=0.3, lw=0, label="trials")
        axes.scatter(
            baselines["cost"], baselines["metric"], s=42, marker="s", facecolor="none", edgecolor=BASELINE_COLOR,
            lw=1.4, label="uniform baselines (hand-picked ratios)",
        )  # fmt: skip
        if not infeasible.empty:
            limit = f" (MACs > {data.max_macs:g})" if data.max_macs is not None else ""
            axes.scatter(
                infeasible["cost"], infeasible["metric"], s=22, marker="x", color=INFEASIBLE_COLOR,
                label=f"infeasible, not fine-tuned{limit}",
            )  # fmt: skip
    front = data.front_trials
    if not front.empty:
        axes.plot(front["cost"], front["metric"], "-o", color=FRONT_COLOR, ms=6, lw=1.8, zorder=4, label="Pareto front")
    axes.scatter([1.0], [data.base["metric"]], s=160, marker="*", color="black", zorder=5, label="base model")
    if data.max_macs is not None and data.cost_name.lower().startswith("macs"):  # the limit is on this axis
        axes.axvline(data.max_macs, color=INFEASIBLE_COLOR, ls="--", lw=1, label=f"max_macs {data.max_macs:g}")
    axes.set_xscale(scale)
    if scale == "log":
        costs = [float(c) for c in data.scored["cost"] if float(c) > 0.0] if not data.scored.empty else []
        axes.set_xlim(min([*costs, 1.0]) / 1.25, 1.25)
    else:
        axes.set_xlim(0.0, 1.05)
    if not front.empty:
        _label_front(axes, front)
    axes.set_xlabel(data.cost_name + (" (log scale)" if scale == "log" else ""))
    axes.set_ylabel(data.metric_name)
    axes.set_title(f"{data.study_name}: {data.metric_name} vs {data.cost_name}")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8, framealpha=0.9)
    return figure


def _label_front(axes, front) -> None:
    """``#n`` beside front points, alternating above and below the line; a point too close to one already
    labelled (in screen pixels, so on either axis scale) goes without, rather than overprint it."""
    labels: dict[tuple[float, float], list[str]] = {}  # trials with equal objectives share one label
    for number, cost, metric in zip(front["number"], front["cost"], front["metric"], strict=True):
        labels.setdefault((float(cost), float(metric)), []).append(f"#{int(number)}")
    placed: list[tuple[float, float]] = []
    for index, ((cost, metric), names) in enumerate(labels.items()):
        x, y = axes.transData.transform((cost, metric))
        if any(abs(x - px) < LABEL_GAP_PX[0] and abs(y - py) < LABEL_GAP_PX[1] for px, py in placed):
            continue
        placed.append((x, y))
        axes.annotate(
            ",".join(names), (cost, metric), textcoords="offset points", xytext=(5, 6 if index % 2 else -11),
            fontsize=7, color=FRONT_COLOR, zorder=6,
        )  # fmt: skip


def plot_ratios(data: ReportData, path: Path) -> Path:
    """A heatmap of pruning ratios, one row per front trial, groups in model order, the criterion in each cell.

    A study that removes no channel (unstructured pruning alone) shows each layer's sparsity and the method.
    """
    front = data.front_trials
    groups = data.groups or [c.split(".", 1)[1] for c in data.trials.columns if c.startswith("ratio.")]
    kind, label, what = "ratio", "criterion", "pruning ratio and criterion per group"
    if not groups:
        groups = [c.split(".", 1)[1] for c in data.trials.columns if c.startswith("sparsity.")]
        kind, label, what = "sparsity", "sparsity_method", "sparsity (fraction of zero weights) and method per layer"
    rows = len(front)
    figure = Figure(figsize=(max(6.0, 0.55 * len(groups) + 2.5), max(2.5, 0.42 * rows + 1.8)))
    axes = figure.add_subplot()
    if rows == 0 or not groups:
        _empty(axes, "no feasible Pareto-optimal trial yet")
        return _save(figure, path)
    values = np.array([[float(front.iloc[r].get(f"{kind}.{g}", np.nan)) for g in groups] for r in range(rows)])
    image = axes.imshow(values, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    for r in range(rows):
        for c, group in enumerate(groups):
            value = values[r, c]
            name = front.iloc[r].get(f"criterion.{group}", "") if kind == "ratio" else front.iloc[r].get(label, "")
            if np.isnan(value):
                continue
            color = "black" if value > 0.6 else "white"
            short = str(name).removesuffix("_unstructured")
            axes.text(c, r, f"{short}\n{value:.2f}", ha="center", va="center", fontsize=6.5, color=color)
    axes.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=7)
    labels = [
        f"#{int(number)}  {metric:.3f} @ {cost:.2f}"
        for number, metric, cost in zip(front["number"], front["metric"], front["cost"], strict=True)
    ]
    axes.set_yticks(range(rows), labels, fontsize=7)
    axes.set_ylabel(f"front trial  ({data.metric_name} @ {data.cost_name})", fontsize=8)
    axes.set_title(f"{what} (front trials, model order)", fontsize=9)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.03, pad=0.02)
    colorbar.set_label("pruning ratio" if kind == "ratio" else "sparsity", fontsize=8)
    return _save(figure, path)


def plot_hypervolume(data: ReportData, path: Path) -> Path:
    """The front's hypervolume against trial number (feasible completed trials so far)."""
    figure = Figure(figsize=(6.5, 3.8))
    axes = figure.add_subplot()
    history = data.hypervolume_history()
    if not history:
        _empty(axes, "no feasible completed trial yet")
        return _save(figure, path)
    numbers, volumes = zip(*history, strict=True)
    axes.step(numbers, volumes, where="post", color=FRONT_COLOR, lw=1.8)
    axes.plot(numbers, volumes, "o", color=FRONT_COLOR, ms=3)
    axes.set_xlabel("trial number")
    axes.set_ylabel("hypervolume")
    ref_metric, ref_cost = REFERENCE_POINT
    axes.set_title(
        f"hypervolume of the front (reference: {data.metric_name} {ref_metric:g}, {data.cost_name} {ref_cost:g})",
        fontsize=9,
    )
    axes.grid(alpha=0.3)
    return _save(figure, path)


def _latency_front(rows) -> list[int]:
    """Positions (in ``rows``) of the feasible trials no other beats on both metric (up) and latency (down)."""
    points = [(float(m), float(c)) for m, c in zip(rows["metric"], rows["latency_relative"], strict=True)]
    keep = [
        i for i, (m, c) in enumerate(points)
        if not any(om >= m and oc <= c and (om > m or oc < c) for om, oc in points)
    ]  # fmt: skip
    return sorted(keep, key=lambda i: points[i][1])


def plot_latency(data: ReportData, path: Path) -> Path:
    """Write :func:`latency_figure` as a PNG."""
    return _save(latency_figure(data), path)


def latency_figure(data: ReportData) -> Figure:
    """Left: the metric against measured latency (relative to the base), every measured trial and the front in
    latency. Right: relative MACs against relative latency for every measured trial, with Spearman's rank
    correlation: where the points leave the diagonal, MACs mislead about speed."""
    retimed = data.retimed_trials
    panels = 3 if not retimed.empty else 2
    figure = Figure(figsize=(6.0 * panels, 4.8))
    FigureCanvasAgg(figure)
    left, right = figure.add_subplot(1, panels, 1), figure.add_subplot(1, panels, 2)
    rows = data.latency_trials
    if rows.empty:
        _empty(left, "no trial with a latency measurement yet")
        _empty(right, "no trial with a latency measurement yet")
        return figure
    feasible = rows[rows["feasible"].astype(bool)]
    infeasible = rows[~rows["feasible"].astype(bool)]
    left.scatter(feasible["latency_relative"], feasible["metric"], s=22, color=TRIAL_COLOR, alpha=0.35, lw=0, label="trials")
    if not infeasible.empty:
        left.scatter(
            infeasible["latency_relative"], infeasible["metric"], s=22, marker="x", color=INFEASIBLE_COLOR,
            label="infeasible, not fine-tuned",
        )  # fmt: skip
    front = feasible.iloc[_latency_front(feasible)] if not feasible.empty else feasible
    if not feasible.empty:
        left.plot(front["latency_relative"], front["metric"], "-o", color=FRONT_COLOR, ms=6, lw=1.8, zorder=4, label="front in latency")
    left.scatter([1.0], [data.base["metric"]], s=160, marker="*", color="black", zorder=5, label="base model")
    left.set_xlabel("latency (relative to the base model)")
    left.set_ylabel(data.metric_name)
    settings = data.latency or {}
    where = f"{settings.get('backend', '?')} on {settings.get('device', '?')}, batch {settings.get('batch', '?')}"
    source = "predicted" if data.latency_source == "predicted" else "measured"
    left.set_title(f"{data.metric_name} vs {source} latency ({where})", fontsize=9)
    left.grid(alpha=0.3)
    left.legend(loc="best", fontsize=8, framealpha=0.9)

    rho = data.latency_rank_correlation()
    spread = rows["latency_spread"].astype(float) if "latency_spread" in rows else None
    if spread is not None and spread.notna().any():
        # Error bars of half the IQR each way: how far a measurement could move on a second try.
        half = 0.5 * spread * rows["latency_relative"].astype(float)
        right.errorbar(rows["macs_relative"], rows["latency_relative"], yerr=half, fmt="none", ecolor="#bbbbbb", lw=0.8)
    right.scatter(rows["macs_relative"], rows["latency_relative"], s=22, color=TRIAL_COLOR, alpha=0.6, lw=0, zorder=3)
    if not front.empty:
        right.scatter(front["macs_relative"], front["latency_relative"], s=40, color=FRONT_COLOR, zorder=4, label="front")
    top = max(1.05, float(rows["latency_relative"].max()) * 1.05, float(rows["macs_relative"].max()) * 1.05)
    right.plot([0.0, top], [0.0, top], ls="--", color=INFEASIBLE_COLOR, lw=1, label="latency = MACs")
    right.set_xlim(0.0, top)
    right.set_ylim(0.0, top)
    right.set_xlabel("MACs (relative)")
    right.set_ylabel("latency (relative)")
    rho_text = "n/a" if math.isnan(rho) else f"{rho:.3f}"
    right.set_title(f"MACs vs latency, every measured trial: Spearman rho {rho_text}", fontsize=9)
    right.grid(alpha=0.3)
    right.legend(loc="upper left", fontsize=8)
    if panels == 3:
        _prediction_panel(figure.add_subplot(1, 3, 3), data, retimed, front)
    return figure


def _prediction_panel(axes: Any, data: ReportData, retimed: Any, front: Any) -> None:
    """``latency.mode: both``: the table's prediction against the timed figure of each fine-tuned trial."""
    quality = data.prediction_quality()
    axes.scatter(
        retimed["latency_ms"], retimed["latency_measured_ms"], s=22, color=TRIAL_COLOR, alpha=0.6, lw=0, zorder=3, label="fine-tuned trials"
    )
    on_front = retimed[retimed.index.isin(front.index)]
    if not on_front.empty:
        axes.scatter(on_front["latency_ms"], on_front["latency_measured_ms"], s=40, color=FRONT_COLOR, zorder=4, label="front")
    top = 1.05 * max(float(retimed["latency_ms"].max()), float(retimed["latency_measured_ms"].max()))
    axes.plot([0.0, top], [0.0, top], ls="--", color=INFEASIBLE_COLOR, lw=1, label="timed = predicted")
    axes.set_xlim(0.0, top)
    axes.set_ylim(0.0, top)
    axes.set_xlabel("predicted latency (ms, latency table)")
    axes.set_ylabel("timed latency (ms)")
    rho, error = quality["spearman"], quality["median_error"]
    text = "n/a" if math.isnan(rho) else f"Spearman rho {rho:.3f}, median error {error:.1%}"
    axes.set_title(f"predicted vs timed: {text}", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left", fontsize=8)
