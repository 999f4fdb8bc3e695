"""Unstructured pruning through ``torch.nn.utils.prune``: zero single weights, keep the masks, make them permanent.

Each method is a registered class, as criteria are. The masks are torch's own (``weight_orig`` and
``weight_mask`` with a forward pre-hook), so fine-tuning a sparsified model keeps the pruned weights at zero;
``make_permanent`` folds them into plain ``weight`` tensors for export.
"""

from __future__ import annotations

import gzip
import hashlib
import io
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils import prune

from autoprune._registry import Registry
from autoprune.engine._device import rng_devices
from autoprune.engine._graph import matching_modules
from autoprune.errors import PruningError, did_you_mean
from autoprune.plan import SparsityPlan

__all__ = [
    "SPARSIFIERS",
    "Sparsifier",
    "apply_sparsity",
    "check_sparsity_held",
    "compressed_bytes",
    "count_nonzero_params",
    "layer_sparsity",
    "make_permanent",
    "refresh_masked_weights",
    "sparsifiable_layers",
]

PARAM = "weight"
_LAYER_TYPES = (nn.modules.conv._ConvNd, nn.Linear)


def sparsifiable_layers(model: nn.Module, ignore: Sequence[str] = ()) -> list[str]:
    """Conv and linear layers with a weight, in model order, less those an ``ignore`` glob matches."""
    ignored = {n for hits in matching_modules(model, ignore).values() for n in hits}
    return [
        name
        for name, module in model.named_modules()
        if name and isinstance(module, _LAYER_TYPES) and isinstance(getattr(module, PARAM, None), torch.Tensor)
        and name not in ignored
    ]


def _zeros(module: nn.Module) -> int:
    """Weights of ``module`` that are zero now: masked out, or zero in a plain weight."""
    mask = getattr(module, f"{PARAM}_mask", None)
    weight = getattr(module, f"{PARAM}_orig") if mask is not None else getattr(module, PARAM)
    effective = weight * mask if mask is not None else weight
    return int(effective.numel() - torch.count_nonzero(effective))


def _count(amount: float, size: int) -> int:
    """How many of ``size`` weights an amount zeroes; the rounding torch.nn.utils.prune uses for a float."""
    return round(amount * size)


class Sparsifier:
    """Zero, in every named layer, the planned number of weights not zero yet (masks stack, as torch's do)."""

    name: ClassVar[str] = ""

    def apply(self, layers: dict[str, nn.Module], amounts: dict[str, float], seed: int) -> None:
        raise NotImplementedError


class _Local(Sparsifier):
    method: ClassVar[str] = ""

    def apply(self, layers: dict[str, nn.Module], amounts: dict[str, float], seed: int) -> None:
        for index, (name, module) in enumerate(layers.items()):
            target = _count(amounts[name], getattr(module, PARAM).numel())
            more = target - _zeros(module)
            if more <= 0:
                continue
            with torch.random.fork_rng(devices=rng_devices(module)):
                torch.manual_seed(seed + index)  # random_unstructured draws: the same plan, the same mask
                getattr(prune, self.method)(module, PARAM, amount=more)


class L1Unstructured(_Local):
    """``prune.l1_unstructured``: the smallest magnitudes of each layer."""

    name = method = "l1_unstructured"


class RandomUnstructured(_Local):
    """``prune.random_unstructured``: weights drawn at random in each layer (the baseline)."""

    name = method = "random_unstructured"


class GlobalUnstructured(Sparsifier):
    """``prune.global_unstructured`` with L1: the smallest magnitudes ranked across every layer at once."""

    name = "global"

    def apply(self, layers: dict[str, nn.Module], amounts: dict[str, float], seed: int) -> None:
        sizes = sum(getattr(m, PARAM).numel() for m in layers.values())
        amount = next(iter(amounts.values()))
        more = _count(amount, sizes) - sum(_zeros(m) for m in layers.values())
        if more > 0:
            prune.global_unstructured(
                [(m, PARAM) for m in layers.values()], pruning_method=prune.L1Unstructured, amount=more
            )


SPARSIFIERS: Registry[type[Sparsifier]] = Registry("unstructured method")
for _cls in (L1Unstructured, RandomUnstructured, GlobalUnstructured):
    SPARSIFIERS.register(_cls.name)(_cls)


def _seed(plan: SparsityPlan) -> int:
    digest = hashlib.sha256(repr(sorted(plan.to_dict()["amounts"].items())).encode() + plan.method.encode()).digest()
    return int.from_bytes(digest[:4], "little")


def apply_sparsity(model: nn.Module, plan: SparsityPlan) -> dict[str, float]:
    """Mask ``model`` in place as ``plan`` says (masks already there stay: this step adds to them).

    Returns each layer's fraction of zero weights afterwards. A layer the plan names that the model lacks is a
    PruningError naming it.
    """
    modules = dict(model.named_modules())
    missing = [name for name in plan.amounts if not isinstance(modules.get(name), _LAYER_TYPES)]
    if missing:
        raise PruningError(
            f"sparsity plan names layer {missing[0]!r}, which is not a conv or linear layer of this model"
            f"{did_you_mean(missing[0], [n for n, m in modules.items() if isinstance(m, _LAYER_TYPES)])}"
        )
    layers = {name: modules[name] for name in plan.amounts}
    for module in layers.values():
        weight = getattr(module, PARAM)
        if not hasattr(module, f"{PARAM}_mask") and not bool(torch.all(weight != 0)):
            # Zeros already in a plain weight (an earlier step made permanent) become a mask, so this step
            # adds to them instead of choosing them again.
            prune.custom_from_mask(module, PARAM, mask=(weight != 0).to(weight.dtype))
    SPARSIFIERS.get(plan.method)().apply(layers, dict(plan.amounts), _seed(plan))
    refresh_masked_weights(model)
    return layer_sparsity(model, list(plan.amounts))


@torch.no_grad()
def refresh_masked_weights(model: nn.Module) -> None:
    """Recompute every masked ``weight`` (``weight_orig * weight_mask``) outside autograd.

    torch.nn.utils.prune stores the product as a non-leaf tensor after a forward with gradients, and such a
    module cannot be deep-copied (as MAC counting does) until the product is recomputed like this.
    """
    for module in model.modules():
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                setattr(module, hook._tensor_name, hook.apply_mask(module))


def layer_sparsity(model: nn.Module, layers: Sequence[str]) -> dict[str, float]:
    """The fraction of zero weights of each named layer (masked or plain)."""
    modules = dict(model.named_modules())
    return {name: _zeros(modules[name]) / getattr(modules[name], PARAM).numel() for name in layers}


def check_sparsity_held(model: nn.Module, expected: dict[str, float], during: str) -> dict[str, float]:
    """Each layer's sparsity now; a PruningError naming the layers when ``during`` (a fine-tune) revived
    weights that ``expected`` had at zero (torch's pre-hook should keep re-applying the mask)."""
    now = layer_sparsity(model, list(expected))
    lost = {name: (round(now[name], 4), round(before, 4)) for name, before in expected.items() if now[name] < before - 1e-9}
    if lost:
        raise PruningError(f"{during} revived masked weights: sparsity {lost} (after, before)")
    return now


def make_permanent(model: nn.Module) -> list[str]:
    """``prune.remove`` every mask: plain ``weight`` tensors holding the zeros; returns the layers it touched."""
    done = []
    for name, module in model.named_modules():
        if prune.is_pruned(module) and hasattr(module, f"{PARAM}_mask"):
            prune.remove(module, PARAM)
            done.append(name)
    return done


@torch.no_grad()
def count_nonzero_params(model: nn.Module) -> int:
    """Non-zero parameter values, counting a masked weight as ``weight_orig * weight_mask``."""
    total = 0
    masks = {f"{n}.{PARAM}_orig": getattr(m, f"{PARAM}_mask") for n, m in model.named_modules() if hasattr(m, f"{PARAM}_mask")}
    masks = {k.lstrip("."): v for k, v in masks.items()}
    for name, param in model.named_parameters():
        value = param * masks[name] if name in masks else param
        total += int(torch.count_nonzero(value))
    return total


@torch.no_grad()
def compressed_bytes(model: nn.Module) -> int:
    """The gzip size of the model's state_dict with any masks folded in: where unstructured sparsity pays off."""
    state = {}
    masked = {n: m for n, m in model.named_modules() if hasattr(m, f"{PARAM}_mask")}
    for key, value in model.state_dict().items():
        module, _, leaf = key.rpartition(".")
        if module in masked and leaf == f"{PARAM}_mask":
            continue
        if module in masked and leaf == f"{PARAM}_orig":
            key, value = f"{module}.{PARAM}" if module else PARAM, value * getattr(masked[module], f"{PARAM}_mask")
        state[key] = value
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return len(gzip.compress(buffer.getvalue(), compresslevel=6, mtime=0))
