from __future__ import annotations

import copy
import json
import pickle

import pytest
import torch

from autoprune import PruningPlan
from autoprune.criteria import GroupTensors, available_criteria, get_criterion
from autoprune.engine import select_removed
from autoprune.errors import ConfigError
from autoprune.plan import SparsityPlan


def test_builtin_criteria_are_registered():
    assert {"l1", "l2", "fpgm"} <= set(available_criteria())


def test_l1_and_l2_can_disagree_and_each_ranks_by_its_own_norm():
    # filter 0: one big weight (L1 4, L2 4); filter 1: spread out (L1 6, L2 3)
    w = torch.tensor([[4.0, 0, 0, 0], [1.5, 1.5, 1.5, 1.5]])
    tensors = GroupTensors("g", w)
    assert select_removed(get_criterion("l1")(tensors), keep=1) == [0]
    assert select_removed(get_criterion("l2")(tensors), keep=1) == [1]


def test_fpgm_prunes_the_filters_nearest_the_geometric_median():
    # Four filters at the corners of a square and one at its centre: the centre is the geometric median,
    # the most replaceable filter, so FPGM removes it first, although its norm is not the smallest.
    w = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0], [0.0, 0.0]]) + torch.tensor([5.0, 0.0])
    scores = get_criterion("fpgm")(GroupTensors("g", w))
    assert select_removed(scores, keep=4) == [4]
    assert select_removed(get_criterion("l2")(GroupTensors("g", w)), keep=4) != [4]


def test_fpgm_uses_raw_weights_not_magnitudes():
    # With |w| the two mirrored filters would coincide; with raw weights they are far apart.
    w = torch.tensor([[3.0, 3.0], [-3.0, -3.0], [2.9, 3.1], [3.1, 2.9]])
    removed = select_removed(get_criterion("fpgm")(GroupTensors("g", w)), keep=3)
    assert removed != [1]


def test_ties_are_broken_by_the_lower_index():
    assert select_removed(torch.tensor([1.0, 1.0, 1.0, 2.0]), keep=2) == [0, 1]


def test_plan_is_frozen_and_json_serialisable():
    plan = PruningPlan({"a": (0.5, "l1"), "b": (0.25, "fpgm")}, round_to=4, scope="group")
    data = json.loads(plan.to_json())
    assert data == {
        "groups": {"a": {"ratio": 0.5, "criterion": "l1"}, "b": {"ratio": 0.25, "criterion": "fpgm"}},
        "round_to": 4,
        "scope": "group",
    }
    assert PruningPlan.from_json(plan.to_json()) == plan
    assert hash(PruningPlan.from_json(plan.to_json())) == hash(plan)
    with pytest.raises(TypeError):
        plan.groups["a"] = None  # type: ignore[index]
    with pytest.raises(AttributeError):
        plan.round_to = 2  # type: ignore[misc]


@pytest.mark.parametrize("entry", [(1.0, "l1"), (-0.1, "l1"), (0.5, "nope"), ("half", "l1")])
def test_plan_refuses_bad_entries(entry):
    with pytest.raises(ConfigError):
        PruningPlan({"a": entry})


def test_unknown_criterion_in_a_plan_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'fpgm'"):
        PruningPlan({"a": (0.5, "fgpm")})


_PLANS = ["structured", "with_sparsity", "sparsity"]


def _plan(kind):
    """A fresh plan per test, so that a mutation that slips through cannot leak into the next test."""
    sparse = SparsityPlan("l1_unstructured", {"conv1": 0.8, "fc": 0.5})
    return {
        "structured": lambda: PruningPlan({"a": (0.5, "l1"), "b": (0.25, "fpgm")}, round_to=4, scope="group"),
        "with_sparsity": lambda: PruningPlan({"a": (0.5, "l1")}, sparsity=sparse),
        "sparsity": lambda: sparse,
    }[kind]()


@pytest.mark.parametrize("kind", _PLANS)
def test_plan_survives_pickle_and_deepcopy(kind):
    plan = _plan(kind)
    for copied in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan), copy.copy(plan)):
        assert copied == plan
        assert hash(copied) == hash(plan)
        assert copied.to_dict() == plan.to_dict()
        if isinstance(plan, PruningPlan):
            assert copied.to_json() == plan.to_json()
        mapping = copied.groups if isinstance(copied, PruningPlan) else copied.amounts
        with pytest.raises(TypeError):  # the copy is as frozen as the original
            mapping["new"] = None


def test_plan_json_is_unchanged_by_the_frozen_mapping():
    # Seeds and stored trials hash this text: it must stay byte for byte what it was.
    plan = _plan("with_sparsity")
    assert plan.to_json() == (
        '{"groups": {"a": {"criterion": "l1", "ratio": 0.5}}, "round_to": 1, "scope": "layer", '
        '"sparsity": {"amounts": {"conv1": 0.8, "fc": 0.5}, "method": "l1_unstructured"}}'
    )


_MUTATIONS = {
    "setitem": lambda m: m.__setitem__("x", None),
    "delitem": lambda m: m.__delitem__(next(iter(m))),
    "update": lambda m: m.update({"x": None}),
    "ior": lambda m: m.__ior__({"x": None}),
    "setdefault": lambda m: m.setdefault("x", None),
    "pop": lambda m: m.pop(next(iter(m))),
    "popitem": lambda m: m.popitem(),
    "clear": lambda m: m.clear(),
}


@pytest.mark.parametrize("route", sorted(_MUTATIONS))
@pytest.mark.parametrize("kind", _PLANS)
def test_every_route_to_mutate_a_plan_is_refused(kind, route):
    plan = _plan(kind)
    mapping = plan.groups if isinstance(plan, PruningPlan) else plan.amounts
    before = plan.to_dict()
    with pytest.raises(TypeError, match="immutable"):
        _MUTATIONS[route](mapping)
    assert plan.to_dict() == before


@pytest.mark.parametrize("kind", _PLANS)
def test_plan_refuses_in_place_union_and_attribute_assignment(kind):
    plan = _plan(kind)
    before = plan.to_dict()
    if isinstance(plan, PruningPlan):
        with pytest.raises(TypeError, match="immutable"):
            plan.groups |= {"x": (0.5, "l1")}  # type: ignore[misc]
        names = ["groups", "round_to", "scope", "sparsity"]
    else:
        with pytest.raises(TypeError, match="immutable"):
            plan.amounts |= {"x": 0.5}  # type: ignore[misc]
        names = ["method", "amounts"]
    for name in names:
        with pytest.raises(AttributeError):
            setattr(plan, name, None)
        with pytest.raises(AttributeError):
            delattr(plan, name)
    assert plan.to_dict() == before
