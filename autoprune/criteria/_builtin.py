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
        w = tensors.weights.double()
        return torch.cdist(w, w, p=2).sum(dim=1).float()
