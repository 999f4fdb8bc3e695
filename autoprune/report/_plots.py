"""The report's figures, drawn with matplotlib's Agg canvas: no display, no pyplot state, safe in threads."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from autoprune.report._collect import ReportData
from autoprune.report._hypervolume import REFERENCE_POINT
from autoprune.study import atomic_write_bytes

__all__ = ["plot_hypervolume", "plot_pareto", "plot_ratios"]

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


def plot_pareto(data: ReportData, path: Path) -> Path:
    """The metric against relative cost: trials faint, uniform baselines, infeasible greyed, the front, the base."""
    figure = Figure(figsize=(7.5, 5.0))
    axes = figure.add_subplot()
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
        # One label per point (trials with equal objectives share it), alternating above and below the line.
        labels: dict[tuple[float, float], list[str]] = {}
        for row in front.itertuples(index=False):
            labels.setdefault((row.cost, row.metric), []).append(f"#{int(row.number)}")
        for index, ((cost, metric), names) in enumerate(labels.items()):
            axes.annotate(
                ",".join(names), (cost, metric), textcoords="offset points", xytext=(5, 6 if index % 2 else -11),
                fontsize=7, color=FRONT_COLOR, zorder=6,
            )  # fmt: skip
    axes.scatter([1.0], [data.base["metric"]], s=160, marker="*", color="black", zorder=5, label="base model")
    if data.max_macs is not None and data.cost_name.lower().startswith("macs"):  # the limit is on this axis
        axes.axvline(data.max_macs, color=INFEASIBLE_COLOR, ls="--", lw=1, label=f"max_macs {data.max_macs:g}")
    axes.set_xlim(0.0, 1.05)
    axes.set_xlabel(data.cost_name)
    axes.set_ylabel(data.metric_name)
    axes.set_title(f"{data.study_name}: {data.metric_name} vs {data.cost_name}")
    axes.grid(alpha=0.3)
    axes.legend(loc="best", fontsize=8, framealpha=0.9)
    return _save(figure, path)


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
        f"#{int(t.number)}  {t.metric:.3f} @ {t.cost:.2f}" for t in front.itertuples(index=False)
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
    numbers, volumes = zip(*history)
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
