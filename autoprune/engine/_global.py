"""Global ranking on a model: score every group's channels once, normalise them per group, and turn one
threshold across groups into a :class:`~autoprune.plan.PruningPlan` (Torch-Pruning's ``global_pruning=True``).

The plan is per group, as every plan: a ratio and a criterion each. Inside one group the normalised order is the
raw order, so ``apply_plan`` with the plan's ratios and the same criterion and scope removes exactly the
globally ranked channels.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from autoprune.criteria import get_criterion, needs_gradients
from autoprune.engine._apply import LossFn, accumulate_gradients, apply_plan, find_groups
from autoprune.engine._device import to_device, weights_device
from autoprune.engine._graph import Group, ModelGraph, count_macs_params
from autoprune.errors import PruningError
from autoprune.plan import PruningPlan, Scope
from autoprune.ranking import NORMALIZERS, ChannelImportances, normalize, ranked_plan

__all__ = ["channel_importances", "global_ranking_plan", "importance_table", "relative_macs"]

# Two seeds a criterion's scores must not depend on: the plan's seed does not exist before the plan.
_SEEDS = (0, 1)


def importance_table(
    model: nn.Module,
    example_inputs: Any,
    groups: Sequence[Group | str],
    criteria: Iterable[str],
    scopes: Iterable[Scope],
    *,
    normalizer: str = "mean",
    power: float = 1.0,
    gradient_batches: Iterable[tuple[Any, Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> dict[tuple[str, Scope], ChannelImportances]:
    """Normalised importances of ``groups`` for every (criterion, scope) pair, from one graph of a copy of
    ``model`` (which is not changed). A criterion that needs gradients reads ``gradient_batches``, taken as
    ``apply_plan`` takes them; a criterion whose scores depend on the plan's seed (``random``) cannot be
    ranked before the plan exists and is refused."""
    criteria, scopes = list(dict.fromkeys(criteria)), list(dict.fromkeys(scopes))
    NORMALIZERS.get(normalizer)  # an unknown name is a ConfigError, before any work
    names = [g if isinstance(g, str) else g.name for g in groups]
    work = copy.deepcopy(model)
    example_inputs = to_device(example_inputs, weights_device(model))
    graph = ModelGraph(work, example_inputs, allow_output_pruning=True)
    known = {g.name for g in graph.groups}
    missing = [n for n in names if n not in known]
    if missing:
        raise PruningError(f"groups {missing} are not prunable groups of {type(model).__name__}")
    if any(needs_gradients(c) for c in criteria):
        if gradient_batches is None:
            raise PruningError("a criterion that needs gradients (taylor) needs gradient_batches for a global ranking")
        accumulate_gradients(work, gradient_batches, loss_fn or nn.functional.cross_entropy)
    table: dict[tuple[str, Scope], dict[str, tuple[float, ...]]] = {(c, s): {} for c in criteria for s in scopes}
    for name in names:
        for scope in scopes:
            views = [graph.group_tensors(name, scope, seed=seed) for seed in _SEEDS]
            for criterion in criteria:
                scores = [_scores(criterion, view) for view in views]
                if not torch.equal(scores[0], scores[1]):
                    raise PruningError(
                        f"criterion {criterion!r} scores group {name!r} differently for every plan (it draws on the "
                        "plan's seed); a global ranking needs scores fixed before the plan: choose another criterion"
                    )
                try:
                    table[(criterion, scope)][name] = normalize(scores[0].double().tolist(), normalizer, power)
                except ValueError as exc:
                    raise PruningError(f"group {name!r}: cannot normalise {criterion!r} scores: {exc}") from exc
    return {key: ChannelImportances(key[0], key[1], groups, normalizer, power) for key, groups in table.items()}


def _scores(criterion: str, tensors: Any) -> torch.Tensor:
    try:
        scores = get_criterion(criterion)(tensors)
    except Exception as exc:
        raise PruningError(f"group {tensors.name!r}: criterion {criterion!r} failed: {exc}") from exc
    if scores.shape != (tensors.channels,) or not torch.isfinite(scores).all():
        raise PruningError(
            f"group {tensors.name!r}: criterion {criterion!r} returned scores of shape {tuple(scores.shape)}; "
            f"expected ({tensors.channels},), finite"
        )
    return scores.detach().cpu()


def channel_importances(
    model: nn.Module,
    example_inputs: Any,
    criterion: str = "l1",
    scope: Scope = "layer",
    *,
    groups: Sequence[Group | str] | None = None,
    ignore: Sequence[str] = (),
    normalizer: str = "mean",
    power: float = 1.0,
    gradient_batches: Iterable[tuple[Any, Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> ChannelImportances:
    """Every group's channel scores under ``criterion`` and ``scope``, normalised per group (``normalizer``:
    ``mean`` as Torch-Pruning, ``max``, ``sum``, ``standardization``, ``none``; scores raised to ``power``
    first). ``groups`` default: :func:`find_groups` of ``model`` with ``ignore``."""
    if groups is None:
        groups = find_groups(model, example_inputs, ignore)
    table = importance_table(
        model, example_inputs, groups, [criterion], [scope],
        normalizer=normalizer, power=power, gradient_batches=gradient_batches, loss_fn=loss_fn,
    )  # fmt: skip
    return table[(criterion, scope)]


def relative_macs(
    model: nn.Module,
    example_inputs: Any,
    base_counts: tuple[int, int] | None = None,
    *,
    gradient_batches: Iterable[tuple[Any, Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> Callable[[PruningPlan], float]:
    """``macs_of(plan)``: the relative MACs of ``plan`` applied to ``model``, as a trial measures them."""
    counts = base_counts or count_macs_params(model, to_device(example_inputs, weights_device(model)))
    batches = list(gradient_batches) if gradient_batches is not None else None

    def macs_of(plan: PruningPlan) -> float:
        return apply_plan(
            model, example_inputs, plan, base_counts=counts, gradient_batches=batches, loss_fn=loss_fn
        )[1].macs_ratio

    return macs_of


def global_ranking_plan(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float | None = None,
    macs: float | None = None,
    criterion: str = "l1",
    scope: Scope = "layer",
    groups: Sequence[Group | str] | None = None,
    ignore: Sequence[str] = (),
    round_to: int = 1,
    max_ratio: float = 0.9,
    normalizer: str = "mean",
    power: float = 1.0,
    scales: Mapping[str, float] | None = None,
    gradient_batches: Iterable[tuple[Any, Any]] | None = None,
    loss_fn: LossFn | None = None,
) -> PruningPlan:
    """The plan that removes the globally lowest-ranked channels of ``model``, for one target:

    - ``ratio``: that fraction of all the groups' channels (Torch-Pruning's ``pruning_ratio`` with
      ``global_pruning=True``);
    - ``macs``: relative MACs at most this, with the fewest channels removed (one more channel kept would miss it).

    Scores are ``criterion`` under ``scope``, normalised per group (see :func:`channel_importances`) and
    multiplied by ``scales[group]`` when given. No group loses more than ``max_ratio`` of its channels; each
    kept count is rounded up to a multiple of ``round_to``. A target out of reach is a PruningError.
    """
    if groups is None:
        groups = find_groups(model, example_inputs, ignore)
    batches = list(gradient_batches) if gradient_batches is not None else None
    importances = channel_importances(
        model, example_inputs, criterion, scope,
        groups=groups, normalizer=normalizer, power=power, gradient_batches=batches, loss_fn=loss_fn,
    )  # fmt: skip
    macs_of = relative_macs(model, example_inputs, gradient_batches=batches, loss_fn=loss_fn) if macs is not None else None
    try:
        return ranked_plan(
            importances.groups, criterion,
            ratio=ratio, macs=macs, macs_of=macs_of, scales=scales, bounds=(0.0, max_ratio), round_to=round_to, scope=scope,
        )  # fmt: skip
    except ValueError as exc:
        raise PruningError(f"global ranking ({criterion}, scope {scope}): {exc}") from exc
