"""What a study was started with (model, search space, objectives, fine-tune recipe, base weights), recorded on
the study, and checked before a search resumes or joins it: a changed config is refused before anything is written,
never mixed into the same study."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import optuna

from autoprune.config import Config
from autoprune.errors import ConfigError
from autoprune.evaluate import needs_latency
from autoprune.study._base import weights_sha256
from autoprune.study._frame import BASE_ATTR
from autoprune.study._storage import mask_password
from autoprune.study._task import Task

__all__ = ["DEFINITION_ATTR", "check_base", "check_definition", "record_base", "record_definition", "storage_place", "study_definition"]

DEFINITION_ATTR = "definition"  # study user attribute: {section: {dotted key: value}}


def _fields(prefix: str, section: Any, *, skip: Sequence[str] = ()) -> dict[str, Any]:
    dumped = section.model_dump(mode="json")
    return {f"{prefix}.{name}": value for name, value in dumped.items() if name not in skip}


def study_definition(config: Config, groups: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The config keys a study's trials depend on, by section. The weights' file paths are left out: the base
    weights themselves are compared by their sha256 (``check_base``), so a moved weights file still resumes."""
    return {
        "model": {
            **_fields("model", config.model, skip=("weights", "file")),
            **_fields("data", config.data),
            **_fields("base_training", config.base_training),
            "study.seed": config.study.seed,
        },
        "search space": {**_fields("prune", config.prune), "groups": list(groups)},
        "objectives": {
            "metric": config.metric,
            "objectives": list(config.objectives),
            **_fields("constraints", config.constraints),
            # Relative latencies measured otherwise (another backend, batch, thread count) are not comparable.
            **(_fields("latency", config.latency) if needs_latency(config) else {}),
        },
        "fine-tune recipe": _fields("finetune", config.finetune),
        "search": _search_fields(config),
    }


def _search_fields(config: Config) -> dict[str, Any]:
    """The search mode and, for a budgeted search, its budgets and baselines, as fitted to the compute
    (``fit_search``): a resume that would search otherwise is refused before anything is written."""
    study = config.study
    fields: dict[str, Any] = {"study.search": study.search}
    if study.search == "budgeted":
        fields.update({"study.budgets": list(study.budgets), "study.budget_weights": study.budget_weights,
                       "study.baselines": study.baselines})  # fmt: skip
    return fields


def storage_place(config: Config) -> str:
    """Where the study lives, for a message: the run folder, or the storage URL without its password."""
    if config.study.storage is None:
        return str(config.output)
    return mask_password(config.study.storage)


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        text = "[" + ", ".join(_show(v) for v in value) + "]"
    elif isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def _refuse(study: optuna.Study, config: Config, what: str, key: str, old: Any, new: Any, more: Sequence[str]) -> ConfigError:
    also = f" (and {', '.join(more)})" if more else ""
    return ConfigError(
        f"study {study.study_name!r} in {storage_place(config)} was started with another {what}: {_show(old)} -> "
        f"{_show(new)}{also}; use --study-name to start a new study beside it",
        key=key,
    )


def check_definition(study: optuna.Study, config: Config, groups: Sequence[str]) -> None:
    """Refuse (one line, naming the first changed key) a config whose model, space, objectives or recipe differ
    from those ``study`` was started with. Keys one side does not know (a field added since) are not compared."""
    recorded = study.user_attrs.get(DEFINITION_ATTR)
    if not isinstance(recorded, dict):
        return  # a study from before definitions were recorded: nothing to compare with
    for what, current in study_definition(config, groups).items():
        old = recorded.get(what)
        if not isinstance(old, dict):
            continue
        changed = [key for key in current if key in old and old[key] != current[key]]
        if changed:
            key = changed[0]
            raise _refuse(study, config, what, key, old[key], current[key], changed[1:])


def record_definition(study: optuna.Study, config: Config, groups: Sequence[str]) -> None:
    study.set_user_attr(DEFINITION_ATTR, study_definition(config, groups))


def check_base(study: optuna.Study, config: Config, task: Task) -> str:
    """The sha256 of ``task``'s base weights, refused (one line) when the study was started with other ones."""
    sha = weights_sha256(task.base.model)
    recorded = study.user_attrs.get(BASE_ATTR)
    if isinstance(recorded, dict) and recorded.get("weights_sha256") not in (None, sha):
        raise ConfigError(
            f"study {study.study_name!r} in {storage_place(config)} was started with other base weights; share the "
            "run folder (or model.weights) between machines so the base model is trained once, or use --study-name "
            "to start a new study beside it",
            key="model.weights",
        )
    return sha


def record_base(study: optuna.Study, task: Task, sha: str) -> None:
    """Every worker must prune the same base model: the first records it (``check_base`` checks the others)."""
    recorded = study.user_attrs.get(BASE_ATTR)
    if not isinstance(recorded, dict) or recorded.get("weights_sha256") != sha:
        base = {
            "metric": task.base.metric,
            "macs": task.base.macs,
            "params": task.base.params,
            "nonzero_params": task.base.nonzero_params,
            "weights_sha256": sha,
        }
        if task.base.compressed_bytes:
            base["compressed_bytes"] = task.base.compressed_bytes
        study.set_user_attr(BASE_ATTR, base)
    if "groups" not in study.user_attrs:
        study.set_user_attr("groups", [g.to_dict() for g in task.base.groups])
