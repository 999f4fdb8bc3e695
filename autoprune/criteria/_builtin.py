from __future__ import annotations

import torch

from autoprune.criteria._base import Criterion, GroupTensors, register_criterion


@register_criterion("l1")
class L1Norm(Criterion):
    """Sum of absolute weights of each filter (Li et al. 2017)."""

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        return tensors.weights.abs().sum(dim=1)


@register_criterion("l2")
class L2Norm(Criterion):
    """Euclidean norm of each filter."""

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        return tensors.weights.pow(2).sum(dim=1).sqrt()


@register_criterion("fpgm")
class FPGM(Criterion):
    """Filter pruning via geometric median (He et al. 2019).

    A filter's score is the sum of Euclidean distances from its *raw* weights to every other filter's; the
    filters with the smallest sums lie nearest the geometric median, are the most replaceable, and go first.
    (torch-pruning's FPGMImportance measures |w|^p instead, which is not the paper's criterion.)
    """

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        return fpgm_distances(tensors.weights, distance_dtype(tensors.weights.device))


def distance_dtype(device: torch.device) -> torch.dtype:
    """float64 on the CPU; float32 elsewhere, where float64 is many times slower (GPUs)."""
    return torch.float64 if device.type == "cpu" else torch.float32


def fpgm_distances(weights: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Sum of Euclidean distances from each row to every other, computed in ``dtype``.

    In float32 the differences are taken directly (no ``|a|^2 + |b|^2 - 2ab`` matrix-product shortcut, whose
    cancellation would cost float32 most of its digits) and summed in float64, so the scores agree with
    float64's to about 1e-6 and rank the filters the same but for sums closer than that (near-ties).
    """
    w = weights.to(dtype)
    mode = "use_mm_for_euclid_dist_if_necessary" if dtype == torch.float64 else "donot_use_mm_for_euclid_dist"
    return torch.cdist(w, w, p=2, compute_mode=mode).double().sum(dim=1).float()


@register_criterion("taylor")
class Taylor(Criterion):
    """First-order Taylor importance (Molchanov et al. 2019): (sum over the filter of gradient * weight)^2.

    The gradient is the loss gradient averaged over the few batches the trial provides, so this is the
    squared first-order estimate of the loss change when the whole filter is removed.
    """

    needs_gradients = True

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        if tensors.grads is None:
            raise ValueError("taylor needs gradients, and none were computed (pass gradient batches)")
        return (tensors.grads.double() * tensors.weights.double()).sum(dim=1).pow(2).float()


@register_criterion("lamp")
class LAMP(Criterion):
    """Layer-adaptive magnitude pruning (Lee et al. 2021), per channel.

    With ``n`` the squared L2 norms of the filters sorted ascending, filter ``u`` scores
    ``n[u] / sum(n[v] for v >= u)``. The score is normalised within the group, so it compares across
    layers; inside one group it orders filters as ``l2`` does (a group's ratio is fixed by the plan).
    """

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        norms = tensors.weights.double().pow(2).sum(dim=1)
        order = torch.argsort(norms, stable=True)
        sorted_norms = norms[order]
        tail = sorted_norms.flip(0).cumsum(0).flip(0)  # sum of the norms at or above each position
        scores = torch.empty_like(norms)
        scores[order] = sorted_norms / tail.clamp_min(torch.finfo(torch.float64).tiny)
        return scores.float()


@register_criterion("bn_scale")
class BNScale(Criterion):
    """Network slimming (Liu et al. 2017): |gamma| of the BatchNorm that normalises each channel.

    A group with no BatchNorm (or an affine-free one) cannot be scored: this raises, naming nothing
    silently; choose another criterion for that group.
    """

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        if tensors.bn_scale is None:
            raise ValueError(
                "bn_scale needs a BatchNorm with affine weights on the group's channels, and this group has none; "
                "use another criterion for it"
            )
        return tensors.bn_scale.abs().float()


@register_criterion("random")
class Random(Criterion):
    """A baseline: uniform random scores, drawn from a generator seeded by the plan and the group name,
    so the same plan removes the same channels every time."""

    def __call__(self, tensors: GroupTensors) -> torch.Tensor:
        # Drawn on the CPU and then moved to the weights' device: the same plan removes the same channels on
        # every device (a CUDA generator draws another sequence), so export on the CPU re-creates a GPU trial.
        generator = torch.Generator().manual_seed(tensors.seed)
        scores = torch.rand(tensors.channels, generator=generator, dtype=torch.float64).float()
        return scores.to(tensors.weights.device)
