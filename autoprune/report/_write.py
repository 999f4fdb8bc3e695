"""``report.md``, the CSVs and the figures, written from a study into one folder."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
import pandas as pd

from autoprune.plan import summarize_plan
from autoprune.report._collect import BUDGETS, ReportData, collect
from autoprune.report._hypervolume import REFERENCE_POINT
from autoprune.report._plots import plot_hypervolume, plot_latency, plot_pareto, plot_ratios
from autoprune.study import FRONT_COLUMNS, atomic_write_bytes, check_output_writable, fidelity_warning

__all__ = ["LATENCY_FILE", "REPORT_FILES", "render_markdown", "write_report"]

REPORT_FILES = ("pareto.png", "ratios.png", "hypervolume.png", "trials.csv", "pareto.csv", "report.md")
LATENCY_FILE = "latency.png"  # written too when the study measured latency
STATES = ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")


def write_report(
    study: optuna.Study, out_dir: str | Path, *, max_macs: float | None = None, key: str = "out_dir"
) -> list[Path]:
    """Write every file in ``REPORT_FILES`` to ``out_dir`` (and ``LATENCY_FILE`` for a study that measured
    latency); works on a study that is still running.

    ``key`` names ``out_dir`` in an error (the flag or config key it came from)."""
    out = Path(out_dir)
    check_output_writable(out, key=key)
    out.mkdir(parents=True, exist_ok=True)
    data = collect(study, max_macs=max_macs)
    atomic_write_bytes(out / "trials.csv", data.trials.to_csv(index=False).encode())
    atomic_write_bytes(out / "pareto.csv", data.front.to_csv(index=False).encode())
    plot_pareto(data, out / "pareto.png")
    plot_ratios(data, out / "ratios.png")
    plot_hypervolume(data, out / "hypervolume.png")
    written = [out / name for name in REPORT_FILES]
    if data.latency is not None:
        written.append(plot_latency(data, out / LATENCY_FILE))
    atomic_write_bytes(out / "report.md", render_markdown(data).encode())
    return written


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def _plan_of(trial: pd.Series, groups: Sequence[str]) -> str:
    plan = {g: (float(trial[f"ratio.{g}"]), str(trial[f"criterion.{g}"])) for g in groups if f"ratio.{g}" in trial}
    sparsity = ""
    if isinstance(trial.get("sparsity_method"), str):
        layers = [float(v) for k, v in trial.items() if str(k).startswith("sparsity.") and pd.notna(v)]
        mean = sum(layers) / len(layers) if layers else float("nan")
        sparsity = f"{trial['sparsity_method']} sparsity (mean over layers) {mean:.2f}"
    return summarize_plan(plan, sparsity) if plan or sparsity else "-"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 120 else f"{value / 60:.1f} min"


def render_markdown(data: ReportData) -> str:
    # Unstructured studies add non-zero params and the gzip size of the weights, where sparsity pays off.
    columns = [c for c in FRONT_COLUMNS if c in data.front.columns]

    def figures(row: Any) -> list[str]:
        return [f"{float(row[c]):.3f}" if pd.notna(row.get(c)) else "-" for c in columns]

    budget_name = data.cost_name.removesuffix(" (relative)")
    lines = _header(data)
    lines += _front_section(data, columns, figures)
    lines += _budgets_section(data, budget_name)
    lines += _best_under_section(data, budget_name, columns, figures)
    if data.latency is not None:
        lines += _latency_section(data, columns, figures)
    lines += _hypervolume_section(data)
    lines += _trials_section(data)
    lines += _time_section(data)
    return "\n".join(lines)


def _header(data: ReportData) -> list[str]:
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    size = f", {data.base['compressed_bytes'] / 1e6:.3f} MB of weights gzipped" if data.sparse else ""
    return [
        f"# autoprune report: {data.study_name}",
        "",
        f"{len(data.trials)} trials, generated {generated}. Base model: {data.metric_name} {data.base['metric']:.4f}, "
        f"{data.base['macs'] / 1e6:.2f} M MACs, {data.base['params'] / 1e6:.3f} M params{size}.",
        "",
        *_recipe_line(data),
        "![Pareto front](pareto.png)",
        "",
    ]


def _recipe_line(data: ReportData) -> list[str]:
    """How candidates were scored: the fine-tune, reconstruction and BatchNorm recalibration they got."""
    recipe = data.recipe
    if recipe is None:
        return []
    steps, epochs = recipe.get("finetune.steps"), recipe.get("finetune.epochs") or 0
    parts = []
    if recipe.get("finetune.reconstruct"):
        parts.append(f"layer-wise reconstruction on {recipe['finetune.reconstruct'].get('batches')} calibration batches")
    parts.append(f"BatchNorm recalibration on {recipe.get('finetune.bn_recalibration_batches')} batches")
    tune = f"a fine-tune of {steps} steps" if steps else f"a fine-tune of {epochs} epochs" if epochs else "no fine-tune (one-shot)"
    return [f"Candidates were scored after {', then '.join(parts)}, and {tune}.", ""]


def _front_section(data: ReportData, columns: list[str], figures: Callable[[Any], list[str]]) -> list[str]:
    lines = ["## Pareto front", ""]
    titles = FRONT_COLUMNS
    front_rows = [(row["trial"], f"{row['metric']:.4f}", *figures(row), row["plan"]) for _, row in data.front.iterrows()]
    lines += _table(("trial", data.metric_name, *(titles[c] for c in columns), "plan"), front_rows)
    lines += ["", "![pruning ratios of the front](ratios.png)"]
    return lines


def _best_under_section(
    data: ReportData, budget_name: str, columns: list[str], figures: Callable[[Any], list[str]]
) -> list[str]:
    lines = ["", f"## Best under a {budget_name} budget", ""]
    titles = FRONT_COLUMNS
    budget_rows: list[tuple[Any, ...]] = []
    for budget in BUDGETS:
        best = data.best_under(budget)
        if best is None:
            budget_rows.append((f"{budget:.0%}", "none", "-", *("-" for _ in columns), "no feasible completed trial this small"))
        else:
            budget_rows.append(
                (f"{budget:.0%}", int(best["number"]), f"{best['metric']:.4f}", *figures(best), _plan_of(best, data.groups))
            )
    lines += _table((f"{budget_name} budget", "trial", data.metric_name, *(titles[c] for c in columns), "plan"), budget_rows)
    return lines


def _hypervolume_section(data: ReportData) -> list[str]:
    metric, cost = data.metric_name, data.cost_name
    ref_metric, ref_cost = REFERENCE_POINT
    return [
        "",
        "## Hypervolume",
        "",
        f"**{data.hypervolume():.4f}** over the feasible completed trials, against the fixed reference point "
        f"({metric} {ref_metric:g}, {cost} {ref_cost:g}): the area of ({metric} x {cost}) the front dominates.",
        "",
        "![hypervolume](hypervolume.png)",
        "",
    ]


def _trials_section(data: ReportData) -> list[str]:
    counts = data.trials["state"].value_counts().to_dict() if not data.trials.empty else {}
    scored = data.scored
    infeasible = int((~scored["feasible"].astype(bool)).sum()) if not scored.empty else 0
    state_rows = [(state.lower(), counts.get(state, 0)) for state in STATES]
    state_rows.append(("of which infeasible", infeasible))
    state_rows.append(("uniform baselines (warm start)", int(data.trials["warm_start"].astype(bool).sum())))
    return ["## Trials", "", *_table(("state", "trials"), state_rows)]


def _time_section(data: ReportData) -> list[str]:
    total = float(data.trials["duration_s"].fillna(0).sum()) if "duration_s" in data.trials else 0.0
    phases = [c for c in data.trials.columns if c.startswith("seconds.")]
    breakdown = ", ".join(
        f"{c.split('.', 1)[1]} {_seconds(float(data.trials[c].fillna(0).sum()))}" for c in phases
    )
    return [
        "",
        "## Time",
        "",
        f"Trial time in total: {_seconds(total)}"
        + (f" ({breakdown})" if breakdown else "")
        + f"; wall clock from the first trial's start to the last one's end: {_seconds(data.wall_seconds)}.",
        "",
    ]


def _correlation(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def _budgets_section(data: ReportData, budget_name: str) -> list[str]:
    """A budgeted study, budget by budget: the plan it selects (the best finalist of the highest rung) and how
    well the screen score ranked the fine-tuned score of the rung-0 finalists (rank correlations)."""
    if not data.budgets:
        return []
    lines = [
        "",
        "## Budgets",
        "",
        f"Every candidate was built at one {budget_name} budget. Selected: the best finalist of the longest fine-tune "
        "the budget reached. Fidelity: rank correlation of the screen score (after BatchNorm recalibration) with the "
        "fine-tuned score over the first fine-tunes; below 0.3 the screen is not informative and the compute is "
        "better spent on fine-tunes.",
        "",
    ]
    rows = []
    for summary in data.budgets:
        winner = summary.winner
        chosen = ("-", "-", "-") if winner is None else (winner.number, f"{winner.values[0]:.4f}", f"{winner.values[1]:.3f}")
        fidelity = f"{_correlation(summary.spearman)} / {_correlation(summary.kendall)} ({summary.pairs} pairs)"
        rows.append((f"{summary.budget:g}", summary.screens, summary.finalists, *chosen, fidelity))
    lines += _table(("budget", "screens", "finalists", "selected trial", data.metric_name, budget_name, "Spearman / Kendall"), rows)
    warnings = [w for w in (fidelity_warning(s) for s in data.budgets) if w is not None]
    return lines + ([""] + [f"- {w}" for w in warnings] if warnings else [])


def _percent(value: float) -> str:
    return "-" if value != value else f"{value:.1%}"  # NaN != NaN


def _prediction_lines(data: ReportData) -> list[str]:
    """``latency.mode`` predicted or both: where the figures came from, and how well the table predicted."""
    if data.latency_source != "predicted":
        return []
    quality = data.prediction_quality()
    lines = [
        "",
        "**Predicted.** The search read each candidate's latency off the latency table (each group timed at a grid "
        "of widths, the others at base width; `autoprune profile`): the latencies here are predictions, not timings."
    ]
    if quality["trials"] >= 3:
        lines[-1] += (
            f" Timed again after fine-tuning (latency.mode both), {int(quality['trials'])} trials: predicted against "
            f"timed, Spearman **{quality['spearman']:.3f}**, median absolute error **{quality['median_error']:.1%}**."
        )
    return lines


def _latency_section(data: ReportData, columns: Sequence[str], figures: Any) -> list[str]:
    """How latency was measured, how noisy it was, how well MACs rank candidates by it, and (when latency is not
    the cost objective) the best trial under each latency budget."""
    s = data.latency or {}
    noise = data.latency_noise()
    rho = data.latency_rank_correlation()
    rows = data.latency_trials
    threads = f", {s['threads']} CPU thread(s)" if s.get("threads") else ""
    bases = list(rows["latency_base_ms"].dropna()) if "latency_base_ms" in rows else []
    base_ms = float(bases[0]) if bases else float("nan")
    lines = [
        "",
        "## Latency",
        "",
        f"Measured with the {s.get('backend')} backend on {s.get('device')} ({s.get('precision')}), batch "
        f"{s.get('batch')}{threads}: the median of {s.get('runs')} timed calls. Base model: {base_ms:.3f} ms. "
        "Latencies are relative to the base model's.",
        "",
        f"**Noise.** The spread of one measurement (interquartile range over the median) was {_percent(noise['median_spread'])} "
        f"for the median measurement and {_percent(noise['max_spread'])} at worst, over {int(noise['measurements'])} "
        f"measurements ({int(noise['cached'])} trials reused the measurement of an architecture measured before). "
        f"The measured trials span {noise['range']:.3f} of the base latency; differences smaller than the spread "
        "are noise.",
        "",
        f"**MACs vs latency.** Spearman rank correlation over {len(rows)} measured trials: "
        f"**{'n/a' if rho != rho else f'{rho:.3f}'}** (1: MACs order the candidates exactly as latency does).",
        "",
        f"![front against latency, and MACs vs latency]({LATENCY_FILE})",
    ]
    if data.latency_source == "predicted":  # no trial was timed by the search: the noise paragraph is the table's
        lines[3] = (f"Timed with the {s.get('backend')} backend on {s.get('device')} ({s.get('precision')}), batch "
                    f"{s.get('batch')}{threads}. Base model: {base_ms:.3f} ms. Latencies are relative to the base model's.")
        lines[4:6] = _prediction_lines(data)
    if data.cost_name.lower().startswith("latency"):
        return lines  # the budget table above is already in latency
    table: list[tuple[Any, ...]] = []
    for budget in BUDGETS:
        best = data.best_under(budget, "latency_relative")
        if best is None:
            table.append((f"{budget:.0%}", "none", "-", *("-" for _ in columns), "no feasible completed trial this fast"))
        else:
            table.append((f"{budget:.0%}", int(best["number"]), f"{best['metric']:.4f}", *figures(best), _plan_of(best, data.groups)))
    titles = [FRONT_COLUMNS[c] for c in columns]
    lines += ["", "Best under a latency budget:", ""]
    lines += _table(("latency budget", "trial", data.metric_name, *titles, "plan"), table)
    return lines
