"""The study as tables: every trial (plan flattened into columns) and the Pareto front with the base first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
import pandas as pd

from autoprune.plan import SparsityPlan, summarize_plan

__all__ = [
    "BASE_ATTR",
    "FIDELITY_ATTR",
    "FRONT_COLUMNS",
    "SCREEN",
    "base_point",
    "front_trials",
    "is_final",
    "pareto_frame",
    "pareto_optimal",
    "trials_frame",
]

# The relative figures a front table can show, with their column titles (the last two: unstructured studies).
FRONT_COLUMNS = {
    "macs_relative": "MACs (rel)",
    "params_relative": "params (rel)",
    "nonzero_params_relative": "non-zero params (rel)",
    "compressed_relative": "gzip size (rel)",
    "latency_relative": "latency (rel)",
    "latency_ms": "latency (ms)",
}
BASE_ATTR = "base"  # study user attribute: {"metric", "macs", "params"} of the unpruned model
# Trial user attribute of a staged search: "screen" (scored after BatchNorm recalibration, never fine-tuned) or
# "finetune". A trial without it (a single search) is fine-tuned: final fidelity.
FIDELITY_ATTR = "fidelity"
SCREEN = "screen"


def is_final(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether ``trial`` was scored at final fidelity (fine-tuned), so that it may stand on the front, count in
    the hypervolume and be exported; a screened trial's score is only a ranking among screens."""
    return trial.user_attrs.get(FIDELITY_ATTR) != SCREEN


def pareto_optimal(trials: Sequence[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    """The trials no other trial beats on both objectives (metric up, cost down), cheapest first."""
    front = []
    for t in trials:
        m, c = t.values
        dominated = any(
            (o.values[0] >= m and o.values[1] <= c) and (o.values[0] > m or o.values[1] < c) for o in trials
        )
        if not dominated:
            front.append(t)
    return sorted(front, key=lambda t: (t.values[1], -t.values[0], t.number))


def front_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's Pareto-optimal trials among its complete, feasible, final-fidelity ones, in trial order.

    Not ``study.best_trials``: screened trials are stored as plain complete trials (so that the sampler learns
    from their scores), and one of them could dominate a fine-tuned trial that belongs on the front."""
    final = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if is_final(t) and all(v <= 0.0 for v in t.constraints.values())
    ]
    return sorted(pareto_optimal(final), key=lambda t: t.number)


def base_point(study: optuna.Study) -> dict[str, Any]:
    base = study.user_attrs.get(BASE_ATTR)
    if not isinstance(base, dict):
        raise ValueError(f"study {study.study_name!r} has no base-model record; was it created by autoprune search?")
    return base


def _flatten(row: dict[str, Any], prefix: str, value: Any) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(row, f"{prefix}.{key}" if prefix else str(key), inner)
    else:
        row[prefix] = value


def _trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = dict(trial.user_attrs)
    row: dict[str, Any] = {
        "number": trial.number,
        "state": trial.state.name,
        "metric": trial.values[0] if trial.values else None,
        "cost": trial.values[1] if trial.values else None,
        "feasible": all(v <= 0.0 for v in trial.constraints.values()),
        "warm_start": bool(trial.user_attrs.get("warm_start", False)),
        "fidelity": attrs.get(FIDELITY_ATTR, "finetune"),
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }
    for key in ("macs", "macs_relative", "params", "params_relative", "metric_before_finetune", "device", "precision", "error"):
        row[key] = attrs.get(key)
    # Unstructured pruning: non-zero parameters, the gzip size of the weights, the method, each layer's sparsity.
    for key in ("nonzero_params", "nonzero_params_relative", "compressed_bytes", "compressed_relative"):
        if key in attrs:
            row[key] = attrs[key]
    # Latency, when the study measures it: relative, absolute, the measurement's spread, and whether cached.
    # latency.mode both: a fine-tuned trial's timed figures beside the predicted ones.
    for key in ("latency_relative", "latency_ms", "latency_spread", "latency_cached", "latency_base_ms",
                "latency_measured_relative", "latency_measured_ms"):  # fmt: skip
        if key in attrs:
            row[key] = attrs[key]
    if isinstance(attrs.get("latency"), dict):
        row["latency_source"] = attrs["latency"].get("source", "measured")
    sparsity_plan = attrs.get("plan", {}).get("sparsity")
    if sparsity_plan:
        row["sparsity_method"] = sparsity_plan["method"]
    _flatten(row, "seconds", attrs.get("seconds", {}))
    _flatten(row, "finetune", attrs.get("finetune", {}))  # its length: epochs, or steps when set
    _flatten(row, "stage", attrs.get("stage", {}))  # a staged search's rung, source trial and compute
    _flatten(row, "worker", attrs.get("worker", {}))  # which worker ran it: index, host, pid, threads
    if "budget" in trial.params and isinstance(attrs.get("slot"), dict):  # a budgeted search: budget, slot, basis
        row["budget"] = trial.params["budget"]
        row["basis"] = trial.params.get("basis")
        _flatten(row, "slot", attrs["slot"])
    for group, entry in attrs.get("plan", {}).get("groups", {}).items():
        row[f"ratio.{group}"] = entry["ratio"]
        row[f"criterion.{group}"] = entry["criterion"]
    for group, channels in attrs.get("channels", {}).items():
        row[f"channels.{group}"] = channels
    for layer, sparsity in attrs.get("sparsity", {}).items():
        row[f"sparsity.{layer}"] = sparsity
    return row


def _plan_summary(plan: dict[str, Any]) -> str:
    groups = plan.get("groups", {})
    sparsity = SparsityPlan.from_dict(plan["sparsity"]).summary() if plan.get("sparsity") else ""
    return summarize_plan({g: (e["ratio"], e["criterion"]) for g, e in groups.items()}, sparsity)


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, objectives, MACs/params, time breakdown, and ``ratio.<group>`` etc. columns."""
    return pd.DataFrame([_trial_row(t) for t in study.get_trials(deepcopy=False)])


def pareto_frame(study: optuna.Study) -> pd.DataFrame:
    """The base model first, then the feasible Pareto-optimal trials below base cost, cheapest last."""
    base = base_point(study)
    sparse = "compressed_bytes" in base  # an unstructured study: non-zero params and compressed size too
    extra: tuple[str, ...] = ("nonzero_params_relative", "compressed_relative") if sparse else ()
    latency = [t for t in front_trials(study) if "latency_relative" in t.user_attrs]
    if latency:  # a study that measures latency: its front shows it, the base at 1.0 and its own milliseconds
        extra = (*extra, "latency_relative", "latency_ms")
    rows: list[dict[str, Any]] = [
        {"trial": "base", "metric": base["metric"], "macs_relative": 1.0, "params_relative": 1.0}
        | {key: 1.0 for key in extra}
        | ({"latency_ms": latency[0].user_attrs.get("latency_base_ms")} if latency else {})
        | {"plan": "unpruned"}
    ]
    front = [t for t in front_trials(study) if t.values[1] < 1.0]
    front.sort(key=lambda t: -t.values[1])
    for t in front:
        row = {
            "trial": t.number,
            "metric": t.values[0],
            "macs_relative": t.user_attrs.get("macs_relative"),
            "params_relative": t.user_attrs.get("params_relative"),
        }
        row |= {key: t.user_attrs.get(key) for key in extra}
        rows.append(row | {"plan": _plan_summary(t.user_attrs.get("plan", {}))})
    return pd.DataFrame(rows)

