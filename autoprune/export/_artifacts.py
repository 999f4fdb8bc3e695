"""Write every artifact, reload it at once, and check its outputs against the in-memory model.

``model.pt`` (the whole module), ``weights.pt`` + ``plan.json`` + ``architecture.json`` + ``example_inputs.pt``
(rebuilt by ``autoprune.load``), ``model.ts`` (TorchScript) and ``model.onnx``; for a Hugging Face model also
``hf/``, a ``save_pretrained`` folder reloaded by ``from_pretrained`` in a process without autoprune (``_hf``). A reloaded artifact whose
outputs (every tensor of them: a dict, a ``ModelOutput``, a tuple) differ from the model's on a fixed batch by
more than the tolerance fails the export, naming the artifact.
TorchScript and ONNX are best effort: a model that does not script, trace or export is recorded, not fatal.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from autoprune.engine import call_model, output_tensors
from autoprune.errors import AutopruneError
from autoprune.export._load import ARCHITECTURE_FILE, EXAMPLE_INPUTS_FILE, PLAN_FILE, WEIGHTS_FILE, load
from autoprune.plan import PruningPlan

__all__ = ["ARTIFACTS", "ArtifactContext", "ExportError", "TOLERANCE", "write_artifacts"]

TOLERANCE = 1e-5
ONNX_TOLERANCE = 1e-4


class ExportError(AutopruneError, RuntimeError):
    """An artifact could not be written or does not reproduce the model; the message names the artifact."""


@dataclass(frozen=True)
class ArtifactContext:
    folder: Path
    probe: Any  # the fixed batch every reload is checked on: a tensor, a tuple (positional) or a dict (keywords)
    expected: Any  # the in-memory model's output on it (a tensor, dict, ModelOutput, tuple, list)
    plan: PruningPlan
    architecture: dict[str, Any]
    onnx_exporter: str  # dynamo, torchscript or off
    example_inputs: Any = None  # saved as example_inputs.pt for autoprune.load; None: zeros of input_shape


def _flat_inputs(probe: Any) -> dict[str, torch.Tensor]:
    """The probe's tensors by input name, as the ONNX graph names them: ``input`` for one tensor, the keyword
    names of a dict, ``input_0``, ``input_1``... for positional ones."""
    if isinstance(probe, torch.Tensor):
        return {"input": probe}
    if isinstance(probe, dict):
        return {str(k): v for k, v in probe.items() if isinstance(v, torch.Tensor)}
    return {f"input_{i}": v for i, v in enumerate(probe) if isinstance(v, torch.Tensor)}


def _args_kwargs(probe: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The probe as the positional and keyword arguments that ``call_model`` passes (for trace and ONNX)."""
    if isinstance(probe, dict):
        return (), dict(probe)
    if isinstance(probe, (tuple, list)):
        return tuple(probe), {}
    return (probe,), {}


Writer = Callable[[nn.Module, ArtifactContext], dict[str, Any]]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporters' deprecation warnings, progress prints and log lines; errors still raise."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _check(name: str, outputs: Any, ctx: ArtifactContext, tolerance: float = TOLERANCE) -> float:
    """The largest difference over every output tensor; a different number of tensors, a different shape or a
    difference above ``tolerance`` fails the export, naming the artifact."""
    got = [t.float() for t in output_tensors(outputs)]
    expected = [t.float() for t in output_tensors(ctx.expected)]
    shapes = [tuple(t.shape) for t in got]
    if shapes != [tuple(t.shape) for t in expected]:
        found, wanted = (shapes[0] if len(shapes) == 1 else shapes), [tuple(t.shape) for t in expected]
        raise ExportError(
            f"{name}: the reloaded artifact returns shape {found}; the model returns "
            f"{wanted[0] if len(wanted) == 1 else wanted}"
        )
    diff = max((float((g - e).abs().max()) if g.numel() else 0.0 for g, e in zip(got, expected, strict=True)), default=0.0)
    if not diff <= tolerance:
        raise ExportError(
            f"{name}: the reloaded artifact's outputs differ from the in-memory model's by {diff:.3g} "
            f"(tolerance {tolerance:g})"
        )
    return diff


def _size(ctx: ArtifactContext, *names: str) -> dict[str, int]:
    return {n: (ctx.folder / n).stat().st_size for n in names}


@torch.no_grad()
def write_whole_module(model: nn.Module, ctx: ArtifactContext) -> dict[str, Any]:
    path = ctx.folder / "model.pt"
    torch.save(model, path)
    # Unpickling runs code by design: this is the tutorial's format, for users who trust the file.
    reloaded = torch.load(path, map_location="cpu", weights_only=False).eval()
    diff = _check("model.pt", call_model(reloaded, ctx.probe), ctx)
    return {"status": "ok", "bytes": _size(ctx, "model.pt"), "max_abs_diff": diff, "tolerance": TOLERANCE}


@torch.no_grad()
def write_state_dict(model: nn.Module, ctx: ArtifactContext) -> dict[str, Any]:
    torch.save(model.state_dict(), ctx.folder / WEIGHTS_FILE)
    (ctx.folder / PLAN_FILE).write_text(json.dumps(ctx.plan.to_dict(), indent=2, sort_keys=True) + "\n")
    (ctx.folder / ARCHITECTURE_FILE).write_text(json.dumps(ctx.architecture, indent=2) + "\n")
    files = [WEIGHTS_FILE, PLAN_FILE, ARCHITECTURE_FILE]
    if ctx.example_inputs is not None:  # what autoprune.load traces the rebuilt model on, in any form
        torch.save(ctx.example_inputs, ctx.folder / EXAMPLE_INPUTS_FILE)
        files.append(EXAMPLE_INPUTS_FILE)
    try:
        reloaded = load(ctx.folder)
    except AutopruneError as exc:
        raise ExportError(f"{WEIGHTS_FILE}: autoprune.load cannot rebuild the model: {exc}") from exc
    diff = _check(WEIGHTS_FILE, call_model(reloaded, ctx.probe), ctx)
    sizes = _size(ctx, *files)
    return {"status": "ok", "bytes": sizes, "max_abs_diff": diff, "tolerance": TOLERANCE, "loader": "autoprune.load"}


@torch.no_grad()
def write_torchscript(model: nn.Module, ctx: ArtifactContext) -> dict[str, Any]:
    path = ctx.folder / "model.ts"
    failures = []
    scripted = None
    method = ""
    args, kwargs = _args_kwargs(ctx.probe)
    # strict=False: a traced model may return a dict (a Hugging Face ModelOutput is one).
    trace = (
        (lambda: torch.jit.trace(model, example_kwarg_inputs=kwargs, strict=False))
        if kwargs
        else (lambda: torch.jit.trace(model, args, strict=False))
    )
    for method, make in (("script", lambda: torch.jit.script(model)), ("trace", trace)):
        try:
            with _quiet():
                scripted = make()
            break
        except Exception as exc:  # scripting fails in many ways on unsupported Python
            failures.append(f"{method}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    if scripted is None:
        return {"status": "failed", "detail": "; ".join(failures)}
    with _quiet():
        torch.jit.save(scripted, str(path))
        reloaded = torch.jit.load(str(path), map_location="cpu")
    diff = _check("model.ts", call_model(reloaded, ctx.probe), ctx)
    return {"status": "ok", "method": method, "bytes": _size(ctx, "model.ts"), "max_abs_diff": diff, "tolerance": TOLERANCE}


def write_onnx(model: nn.Module, ctx: ArtifactContext) -> dict[str, Any]:
    if ctx.onnx_exporter == "off":
        return {"status": "skipped", "detail": "export.onnx_exporter is off"}
    try:
        import onnx
    except ImportError:
        return {"status": "skipped", "detail": "onnx is not installed: pip install 'autoprune[onnx]'"}
    path = ctx.folder / "model.onnx"
    inputs = _flat_inputs(ctx.probe)
    args, kwargs = _args_kwargs(ctx.probe)
    one = isinstance(ctx.probe, torch.Tensor) and len(output_tensors(ctx.expected)) == 1
    # One tensor in and out keeps its names and a dynamic batch; other forms are exported at the probe's shapes.
    options: dict[str, Any] = {"input_names": list(inputs)}
    if one:
        options["output_names"] = ["output"]
    if ctx.onnx_exporter == "dynamo":
        # One self-contained file: no model.onnx.data beside it (fine below ONNX's 2 GB protobuf limit).
        options.update(dynamo=True, external_data=False)
        if one:
            options["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        options.update(dynamo=False)
        if one:
            options["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    try:
        with _quiet(), torch.no_grad():
            torch.onnx.export(model, args, str(path), kwargs=kwargs or None, **options)
        onnx.checker.check_model(str(path))
    except Exception as exc:  # the exporters raise many types; the export goes on without ONNX
        path.unlink(missing_ok=True)
        detail = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        return {"status": "failed", "exporter": ctx.onnx_exporter, "detail": detail}
    record: dict[str, Any] = {"status": "ok", "exporter": ctx.onnx_exporter, "bytes": _size(ctx, "model.onnx")}
    try:
        import onnxruntime
    except ImportError:
        record.update(status="unchecked", detail="onnxruntime is not installed: outputs not compared")
        return record
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    # The graph may drop inputs the forward never reads; the rest are fed by name, or by position.
    arrays = list(inputs.values())
    feed = {i.name: (inputs[i.name] if i.name in inputs else arrays[k]).numpy() for k, i in enumerate(session.get_inputs())}
    outputs = [torch.from_numpy(o) for o in session.run(None, feed)]
    record.update(max_abs_diff=_check("model.onnx", outputs, ctx, ONNX_TOLERANCE), tolerance=ONNX_TOLERANCE)
    return record


@torch.no_grad()
def write_hf(model: nn.Module, ctx: ArtifactContext) -> dict[str, Any]:
    from autoprune.export._hf import HF_FOLDER, reload_outputs, write_hf_folder

    if not isinstance(ctx.probe, dict):
        return {"status": "refused", "detail": "hf/ not written: the reload check needs dict example inputs"}
    record, auto_name = write_hf_folder(model, ctx.folder)
    if auto_name is None:
        return record
    try:
        outputs, report = reload_outputs(ctx.folder, auto_name, ctx.probe)
    except Exception as exc:  # the subprocess's own error, in one line
        raise ExportError(f"{HF_FOLDER}/: {type(exc).__name__}: {exc}") from exc
    finally:
        for scratch in ("probe.safetensors", "outputs.safetensors"):
            (ctx.folder / scratch).unlink(missing_ok=True)
    if report.get("autoprune_imported", True):
        raise ExportError(f"{HF_FOLDER}/: the reload imported autoprune; the folder must load without it")
    diff = _check(f"{HF_FOLDER}/", outputs, ctx)
    loader = f"transformers.{auto_name}.from_pretrained"
    return {**record, "max_abs_diff": diff, "tolerance": TOLERANCE, "loader": loader, "class": report.get("class")}


def _is_hf_model(model: nn.Module) -> bool:
    from autoprune.export._hf_config import is_hf_model

    return is_hf_model(model)


# In writing order; the name is the artifact's main file.
ARTIFACTS: tuple[tuple[str, Writer], ...] = (
    ("model.pt", write_whole_module),
    (WEIGHTS_FILE, write_state_dict),
    ("model.ts", write_torchscript),
    ("model.onnx", write_onnx),
)
# Written only for the models each applies to: (name, applies(model), writer).
OPTIONAL_ARTIFACTS: tuple[tuple[str, Callable[[nn.Module], bool], Writer], ...] = (("hf", _is_hf_model, write_hf),)


@torch.no_grad()
def write_artifacts(model: nn.Module, ctx: ArtifactContext) -> dict[str, dict[str, Any]]:
    """Write and verify each artifact in ``ctx.folder``; returns a record per artifact."""
    model.eval()
    records = {name: writer(model, ctx) for name, writer in ARTIFACTS}
    records.update({name: writer(model, ctx) for name, applies, writer in OPTIONAL_ARTIFACTS if applies(model)})
    return records
