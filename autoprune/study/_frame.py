"""The study as tables: every trial (plan flattened into columns) and the Pareto front with the base first."""

from __future__ import annotations

from typing import Any

import optuna
import pandas as pd

from autoprune.plan import SparsityPlan, summarize_plan

__all__ = ["BASE_ATTR", "FRONT_COLUMNS", "base_point", "pareto_frame", "trials_frame"]

# The relative figures a front table can show, with their column titles (the last two: unstructured studies).
FRONT_COLUMNS = {
    "macs_relative": "MACs (rel)",
    "params_relative": "params (rel)",
    "nonzero_params_relative": "non-zero params (rel)",
    "compressed_relative": "gzip size (rel)",
}
BASE_ATTR = "base"  # study user attribute: {"metric", "macs", "params"} of the unpruned model


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
        "duration_s": trial.duration.total_seconds() if trial.duration else None,
    }
    for key in ("macs", "macs_relative", "params", "params_relative", "metric_before_finetune", "device", "precision", "error"):
        row[key] = attrs.get(key)
    # Unstructured pruning: non-zero parameters, the gzip size of the weights, the method, each layer's sparsity.
    for key in ("nonzero_params", "nonzero_params_relative", "compressed_bytes", "compressed_relative"):
        if key in attrs:
            row[key] = attrs[key]
    sparsity_plan = attrs.get("plan", {}).get("sparsity")
    if sparsity_plan:
        row["sparsity_method"] = sparsity_plan["method"]
    _flatten(row, "seconds", attrs.get("seconds", {}))
    _flatten(row, "worker", attrs.get("worker", {}))  # which worker ran it: index, host, pid, threads
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
    extra = ("nonzero_params_relative", "compressed_relative") if sparse else ()
    rows: list[dict[str, Any]] = [
        {"trial": "base", "metric": base["metric"], "macs_relative": 1.0, "params_relative": 1.0}
        | {key: 1.0 for key in extra}
        | {"plan": "unpruned"}
    ]
    front = [t for t in study.best_trials if t.values[1] < 1.0]
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

