"""Layer-wise reconstruction: recovery without a gradient step.

After pruning, every conv or linear layer that lost input channels is refitted by least squares, so that its
output on a few calibration batches matches the base model's output of the same layer (Channel Pruning, He et al.
2017; ThiNet; FLAP and SlimGPT for transformers). Layers are taken in forward order, each one's inputs from the
pruned model as already refitted (sequential reconstruction, so errors do not pile up), and its target from the
base model. The normal equations are accumulated batch by batch in float64: memory does not grow with the number
of batches, and no activations of the whole calibration set are held. Convolutions are unfolded, on a seeded
subsample of output positions; grouped and depthwise convolutions are solved group by group.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from autoprune.engine import call_model, has_labels, to_device, weights_device, without_labels
from autoprune.errors import ReconstructionError

__all__ = ["LayerFit", "Reconstruction", "reconstruct"]

_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
MAX_FEATURES = 32768  # a solve's features (input channels x kernel, + bias) past which it is refused
Forward = Callable[[nn.Module, Any], Any]


@dataclass(frozen=True)
class LayerFit:
    """One layer's reconstruction: its relative output error on the calibration batches before and after (the
    squared error against the base layer's output, over that output's squared norm)."""

    name: str
    error_before: float
    error_after: float
    refitted: bool
    reason: str = ""  # why it keeps its pruned weights


@dataclass(frozen=True)
class Reconstruction:
    batches: int
    layers: tuple[LayerFit, ...]
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "layers": [asdict(layer) for layer in self.layers]}


class _Stop(Exception):
    """Raised by a hook once it has what it needs: the rest of the forward is not run."""


def _inputs_forward(model: nn.Module, batch: Any) -> Any:
    """The model on a batch's inputs: ``(inputs, targets, ...)`` or a dict (its ``labels`` left out)."""
    if has_labels(batch):
        return call_model(model, without_labels(batch))
    return call_model(model, batch[0] if isinstance(batch, (tuple, list)) else batch)


def _capture(model: nn.Module, module: nn.Module, batch: Any, forward: Forward, output: bool) -> torch.Tensor:
    """``module``'s input (or output) when ``model`` runs on ``batch``; the forward stops there."""
    found: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple[Any, ...], out: Any = None) -> None:
        found.append((out if output else args[0]).detach())
        raise _Stop

    handle = module.register_forward_hook(hook) if output else module.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            forward(model, to_device(batch, weights_device(model)))
    except _Stop:
        pass
    finally:
        handle.remove()
    if not found:
        raise ReconstructionError(f"reconstruct: layer {_name(model, module)!r} did not run on a calibration batch")
    return found[0]


def _name(model: nn.Module, module: nn.Module) -> str:
    return next((n for n, m in model.named_modules() if m is module), "?")


def _in_width(module: Any) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features
    return int(module.weight.shape[1]) * int(getattr(module, "groups", 1))


def _candidates(pruned: nn.Module, base: nn.Module) -> list[str]:
    """The pruned model's conv/linear layers that lost input channels, by name."""
    base_modules = dict(base.named_modules())
    found = []
    for name, module in pruned.named_modules():
        other = base_modules.get(name)
        if isinstance(module, _LAYERS) and other is not None and hasattr(other, "weight"):
            base_width = other.weight.shape[0] if not isinstance(other, _LAYERS) else _in_width(other)  # HF Conv1D
            if _in_width(module) < int(base_width):
                found.append(name)
    return found


def _forward_order(pruned: nn.Module, names: Sequence[str], batch: Any, forward: Forward) -> list[str]:
    modules = dict(pruned.named_modules())
    order: list[str] = []
    handles = [
        modules[n].register_forward_pre_hook(lambda _m, _a, n=n: order.append(n) if n not in order else None)
        for n in names
    ]
    try:
        with torch.no_grad():
            forward(pruned, to_device(batch, weights_device(pruned)))
    finally:
        for handle in handles:
            handle.remove()
    return order


def _features(
    module: Any, x: torch.Tensor, y: torch.Tensor, rows: torch.Generator, positions: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(groups, rows, features) inputs and (groups, rows, outputs) targets of one batch, ``positions`` rows at
    most (a seeded subsample)."""
    if isinstance(module, nn.Linear):
        feats, target = x.reshape(-1, x.shape[-1])[None], y.reshape(-1, y.shape[-1])[None]
    else:
        conv = module
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str) and conv.padding != "valid":
            raise _Skip("its padding is not plain zeros")
        if isinstance(conv, nn.Conv1d):
            x, y = x[:, :, None], y[:, :, None]
        kernel, stride, padding, dilation = (
            tuple(v) if len(v) == 2 else (1, *v) for v in (conv.kernel_size, conv.stride, _padding(conv), conv.dilation)
        )
        cols = nn.functional.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)  # (B, C*k, L)
        groups = conv.groups
        feats = cols.transpose(1, 2).reshape(-1, groups, cols.shape[1] // groups).transpose(0, 1)
        target = y.flatten(2).transpose(1, 2).reshape(-1, groups, y.shape[1] // groups).transpose(0, 1)
    count = feats.shape[1]
    if count > positions:
        keep = torch.randperm(count, generator=rows)[:positions].to(feats.device)
        feats, target = feats[:, keep], target[:, keep]
    return feats.double(), target.double()


def _padding(conv: Any) -> tuple[int, ...]:
    padding = conv.padding
    return (0,) * len(conv.kernel_size) if padding == "valid" else tuple(padding)


class _Skip(Exception):
    """A layer reconstruction leaves as it is, with the reason."""


def _weights(module: Any) -> torch.Tensor:
    """The layer's weight as (groups, features, outputs per group), the bias as the last feature."""
    w = module.weight.detach().double()
    if isinstance(module, nn.Linear):
        w = w[None].transpose(1, 2)
    else:
        groups = module.groups
        w = w.reshape(groups, w.shape[0] // groups, -1).transpose(1, 2)
    if module.bias is not None:
        b = module.bias.detach().double().reshape(w.shape[0], 1, -1)
        w = torch.cat([w, b], dim=1)
    return w


def _write(module: Any, w: torch.Tensor) -> None:
    with torch.no_grad():
        if module.bias is not None:
            module.bias.copy_(w[:, -1].reshape(-1).to(module.bias.dtype))
            w = w[:, :-1]
        if isinstance(module, nn.Linear):
            module.weight.copy_(w[0].t().to(module.weight.dtype))
        else:
            module.weight.copy_(w.transpose(1, 2).reshape(module.weight.shape).to(module.weight.dtype))


def _error(w: torch.Tensor, a: torch.Tensor, b: torch.Tensor, yy: float) -> float:
    """||X W - Y||^2 / ||Y||^2 from the normal equations."""
    squared = torch.einsum("gio,gij,gjo->", w, a, w) - 2 * torch.einsum("gio,gio->", w, b) + yy
    return float(squared) / yy if yy > 0 else float("nan")


def _refit(
    name: str,
    pruned: nn.Module,
    base: nn.Module,
    batches: Sequence[Any],
    kept_out: Sequence[int] | None,
    *,
    ridge: float,
    positions: int,
    seed: int,
    forward: Forward,
    max_features: int,
) -> LayerFit:
    module: Any = dict(pruned.named_modules())[name]
    target_module = dict(base.named_modules())[name]
    groups = getattr(module, "groups", 1) if not isinstance(module, nn.Linear) else 1
    features = module.weight[0].numel() + (module.bias is not None)  # in channels (per group) x kernel, + bias
    if features > max_features:
        raise ReconstructionError(
            f"reconstruct: layer {name!r} needs a least-squares solve of {groups} x {features} features "
            f"({groups * features**2 * 8 / 2**30:.1f} GiB of normal equations), over the limit of {max_features}; "
            "set reconstruct: null, or ignore the layer's group (prune.ignore)"
        )
    rows = torch.Generator().manual_seed(seed)
    a = b = None
    yy = 0.0
    try:
        for batch in batches:
            x = _capture(pruned, module, batch, forward, output=False)
            y = _capture(base, target_module, batch, forward, output=True).to(x.device)
            axis = -1 if isinstance(module, nn.Linear) else 1
            if y.shape[axis] != module.weight.shape[0]:
                if kept_out is None:
                    raise _Skip("its outputs were pruned too, and no kept channels were given")
                y = y.index_select(axis, torch.as_tensor(list(kept_out), device=y.device))
            if not (torch.isfinite(x).all() and torch.isfinite(y).all()):
                raise ReconstructionError(
                    f"reconstruct: the calibration activations of layer {name!r} hold NaN or Inf; check the data and "
                    "the base model on it"
                )
            feats, target = _features(module, x, y, rows, positions)
            if module.bias is not None:
                feats = torch.cat([feats, feats.new_ones(*feats.shape[:2], 1)], dim=2)
            a = feats.transpose(1, 2) @ feats if a is None else a + feats.transpose(1, 2) @ feats
            b = feats.transpose(1, 2) @ target if b is None else b + feats.transpose(1, 2) @ target
            yy += float((target * target).sum())
    except _Skip as skip:
        return LayerFit(name, float("nan"), float("nan"), False, str(skip))
    except torch.OutOfMemoryError:
        raise ReconstructionError(
            f"reconstruct: layer {name!r} ran out of memory with {groups} x {features} features; lower "
            "reconstruct.positions or set reconstruct: null"
        ) from None
    assert a is not None and b is not None
    current = _weights(module)
    before = _error(current, a, b, yy)
    scale = a.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(1e-12)
    eye = torch.eye(a.shape[1], dtype=a.dtype, device=a.device)
    try:
        solved = torch.linalg.solve(a + ridge * scale[:, None, None] * eye, b)
    except RuntimeError:
        return LayerFit(name, before, before, False, "its solve is singular")
    after = _error(solved, a, b, yy)
    if not (torch.isfinite(solved).all() and after == after) or after >= before:
        return LayerFit(name, before, before, False, "the solve does not lower its output error")
    _write(module, solved)
    return LayerFit(name, before, after, True)


def reconstruct(
    pruned: nn.Module,
    base: nn.Module,
    batches: Iterable[Any],
    *,
    kept: Mapping[str, tuple[Sequence[int], Sequence[int]]] | None = None,
    ridge: float = 1e-3,
    positions: int = 4096,
    seed: int = 0,
    forward: Forward | None = None,
    max_features: int = MAX_FEATURES,
) -> Reconstruction:
    """Refit, in place, every conv/linear layer of ``pruned`` that lost input channels, so that its output on
    ``batches`` matches ``base``'s output of the same layer (by module name); ``base`` is not changed.

    Args:
        pruned: the pruned copy (``apply_plan``'s), on any device.
        base: the unpruned model, on the same device or another.
        batches: calibration batches: ``(inputs, targets, ...)`` tuples, dicts (Hugging Face; ``labels`` is left
            out), or inputs alone.
        kept: each layer's kept (output, input) channels, as indices into the base layer's (``PruneReport.kept``):
            a layer whose outputs were pruned too is matched on its kept outputs. None: only layers with all their
            outputs are refitted.
        ridge: the regularisation, relative to the mean diagonal of the normal equations.
        positions: the rows (output positions of a conv, tokens of a linear) taken from each batch, at most.
        seed: seeds the subsample of positions.
        forward: ``forward(model, batch)`` runs a model on a batch (default: its inputs, as above).
        max_features: a solve with more features is refused.

    Returns:
        What was refitted: per layer, the relative output error on the calibration batches before and after.
        A layer whose solve is singular or does not lower its error keeps its pruned weights, with a warning.

    Raises:
        ReconstructionError: no calibration batch, activations with NaN or Inf, or a solve too large.
    """
    calibration = list(batches)
    if not calibration:
        raise ReconstructionError("reconstruct: no calibration batch (reconstruct.batches)")
    run = forward or _inputs_forward
    names = _candidates(pruned, base)
    if not names:
        return Reconstruction(len(calibration), (), ("reconstruct: no layer lost input channels; nothing to refit",))
    was_training = (pruned.training, base.training)
    pruned.eval()
    base.eval()
    fits = []
    try:
        for name in _forward_order(pruned, names, calibration[0], run):
            kept_out = kept[name][0] if kept is not None and name in kept else None
            fits.append(_refit(name, pruned, base, calibration, kept_out, ridge=ridge, positions=positions, seed=seed,
                               forward=run, max_features=max_features))  # fmt: skip
    finally:
        pruned.train(was_training[0])
        base.train(was_training[1])
    kept_layers = [f for f in fits if not f.refitted]
    warnings: tuple[str, ...] = ()
    if kept_layers:
        warnings = (
            "reconstruct: kept the pruned weights of "
            + ", ".join(f"{f.name} ({f.reason})" for f in kept_layers),
        )
    return Reconstruction(len(calibration), tuple(fits), warnings)
