"""The per-channel rows a criterion scores for a DepGraph group: weight rows, gradient rows, BatchNorm |gamma|."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from autoprune.criteria import GroupTensors
from autoprune.engine._graph._rows import _out_rows, _rows_of, _scatter_rows
from autoprune.engine._graph._traced import TracedModel

__all__ = ["dependency_group_tensors"]


def dependency_group_tensors(
    traced: TracedModel, tp_group: Any, name: str, root: nn.Module, channels: int, scope: str, seed: int
) -> GroupTensors:
    """Weight rows always; gradient rows in the same layout when the weights hold ``.grad``; |gamma| of the
    BatchNorm on the root's outputs (``layer``) or summed over every coupled BatchNorm (``group``)."""
    with torch.no_grad():
        bn_scale = _bn_scale(tp_group, root, channels, scope)
        if scope == "layer":
            grad = getattr(root.weight, "grad", None)
            return GroupTensors(
                name,
                _out_rows(root).detach().clone(),
                grads=None if grad is None else _out_rows(root, grad).detach().clone(),
                bn_scale=bn_scale,
                seed=seed,
            )
        weights, grads, with_grads = [], [], True
        for i, (dep, idxs) in enumerate(tp_group):
            module = dep.target.module
            out = traced.prunes_out(dep)
            rows = _rows_of(module, list(idxs), out)
            if rows is None:
                continue
            at = torch.as_tensor(list(tp_group[i].root_idxs), dtype=torch.long, device=rows.device)
            weights.append(_scatter_rows(rows, at, channels))
            grad = getattr(module.weight, "grad", None)
            with_grads = with_grads and grad is not None
            if with_grads:
                grad_rows = _rows_of(module, list(idxs), out, grad)
                with_grads = grad_rows is not None
                if grad_rows is not None:
                    grads.append(_scatter_rows(grad_rows, at, channels))
        return GroupTensors(
            name,
            torch.cat(weights, dim=1),
            grads=torch.cat(grads, dim=1) if with_grads and grads else None,
            bn_scale=bn_scale,
            seed=seed,
        )


def _bn_scale(tp_group: Any, root: nn.Module, channels: int, scope: str) -> torch.Tensor | None:
    """|gamma| per channel: the BatchNorm fed directly by ``root`` (scope layer) or every coupled one."""
    total: torch.Tensor | None = None
    for i, (dep, idxs) in enumerate(tp_group):
        module = dep.target.module
        if not isinstance(module, nn.modules.batchnorm._BatchNorm) or not module.affine:
            continue
        if scope == "layer" and dep.source.module is not root:
            continue
        gamma = module.weight.detach()
        scale = torch.zeros(channels, dtype=torch.float64, device=gamma.device)
        at = torch.as_tensor(list(tp_group[i].root_idxs), dtype=torch.long, device=gamma.device)
        scale[at] = gamma[torch.as_tensor(list(idxs), dtype=torch.long, device=gamma.device)].abs().double()
        total = scale if total is None else total + scale
    return None if total is None else total.float()
