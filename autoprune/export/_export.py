"""``export_model``: pick a trial, recover it, measure it, write and verify the artifacts, atomically."""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from autoprune._version import __version__
from autoprune.config import Config, dump_config
from autoprune.engine import (
    PruneReport,
    call_model,
    compressed_bytes,
    count_nonzero_params,
    has_labels,
    to_device,
    without_labels,
)
from autoprune.errors import ConfigError
from autoprune.evaluate import CPU
from autoprune.export._artifacts import ArtifactContext, write_artifacts
from autoprune.export._load import EXAMPLE_INPUTS_FILE
from autoprune.export._measure import latency_before_after, remeasure_search_latency, search_latency_line
from autoprune.export._recover import EpochHook, Recovered, recover
from autoprune.export._select import Selection, select_trial
from autoprune.plan import PruningPlan
from autoprune.study import (
    FinetuneBudget,
    Task,
    base_point,
    check_output_writable,
    factory_search_paths,
    first_channels,
    open_study,
    prepare_task,
)

__all__ = ["EXPORT_FILE", "ExportResult", "check_out_dir", "config_hash", "export_model", "remove_stale_tmp", "tmp_prefix"]

EXPORT_FILE = "export.json"
PROBE_SIZE = 16
# A re-created trial normally scores exactly what the search recorded; other torch thread counts can move a
# prediction or two, more than that means the inputs changed.
REPRODUCE_TOLERANCE = 0.01
STALE_TMP_S = 24 * 3600  # a temporary folder exists only while the artifacts are written: minutes, not a day


@dataclass(frozen=True)
class ExportResult:
    out: Path
    record: dict[str, Any]  # what export.json holds

    def summary(self) -> str:
        """A few lines for a human: what was exported, and what it gained and cost."""
        r = self.record
        m, lat = r["metric"], r["latency"]
        ok = [name for name, a in r["artifacts"].items() if a["status"] == "ok"]
        not_ok = [f"{name} {a['status']} ({a.get('detail', '')})" for name, a in r["artifacts"].items() if a["status"] != "ok"]
        lines = [
            f"exported trial {r['trial']} ({r['selection']}) to {self.out}",
            f"  MACs    {r['macs']['before'] / 1e6:.2f} M -> {r['macs']['after'] / 1e6:.2f} M ({r['macs']['relative']:.3f})",
            f"  params  {r['params']['before'] / 1e3:.1f} k -> {r['params']['after'] / 1e3:.1f} k ({r['params']['relative']:.3f})",
            f"  non-zero params {r['nonzero_params']['before'] / 1e3:.1f} k -> {r['nonzero_params']['after'] / 1e3:.1f} k "
            f"({r['nonzero_params']['relative']:.3f}); weights gzipped {r['compressed_bytes']['before'] / 1e3:.0f} kB -> "
            f"{r['compressed_bytes']['after'] / 1e3:.0f} kB ({r['compressed_bytes']['relative']:.3f})",
            f"  {m['name']} on {m['split']}: base {m['base']:.4f} | pruned {m['pruned']:.4f} | "
            f"search fine-tune {m['search_finetuned']:.4f} | recovered {m['recovered']:.4f}",
            f"  CPU latency (batch {lat['batch']}, {lat['threads']} thread(s), median of {lat['runs']}): "
            f"{lat['before_ms']:.3f} ms -> {lat['after_ms']:.3f} ms ({lat['speedup']:.2f}x)",
            *_device_line(r.get("latency_on_device")),
            *search_latency_line(r.get("latency_search")),
            f"  artifacts: {', '.join(ok)}" + (f"; not written: {'; '.join(not_ok)}" if not_ok else ""),
        ]
        return "\n".join(lines)


def _device_line(lat: dict[str, Any] | None) -> list[str]:
    if not lat:
        return []
    return [
        f"  {lat['device']} latency ({lat['precision']}, batch {lat['batch']}, median of {lat['runs']}): "
        f"{lat['before_ms']:.3f} ms -> {lat['after_ms']:.3f} ms ({lat['speedup']:.2f}x)"
    ]


def config_hash(config: Config) -> str:
    return hashlib.sha256(json.dumps(config.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:16]


def check_out_dir(out: Path, force: bool) -> None:
    """Refuse an existing ``out`` unless ``force`` (never silently overwrite an export), and one that cannot be
    created; checked before any model work, so a typo does not cost a fine-tune."""
    if out.exists() and not force:
        raise ConfigError(f"{str(out)!r} already exists; choose another folder or pass --force to replace it", key="--out")
    check_output_writable(out, key="--out")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "_", socket.gethostname())


def tmp_prefix(out: Path) -> str:
    """``.NAME.tmp-HOST.PID-``: the temporary folder names whose export it is, so a later one can tell a
    killed export's leftovers from a running one's."""
    return f".{out.name}.tmp-{_host()}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_tmp(out: Path) -> list[Path]:
    """Remove the temporary folders that killed exports to ``out`` left beside it (``.NAME.tmp-*``, and
    ``.NAME.old-*`` from a kill while replacing): those of a process that no longer runs on this host, and any
    older than ``STALE_TMP_S`` (another host's on a shared disk). Returns the removed folders."""
    mine = re.compile(rf"^\.{re.escape(out.name)}\.(tmp|old)-")
    owner = re.compile(r"\.tmp-(?P<host>[A-Za-z0-9_-]*)\.(?P<pid>\d+)-")
    removed = []
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        if not mine.match(path.name) or not path.is_dir():
            continue
        found = owner.search(path.name)
        dead = found is not None and found["host"] == _host() and not _pid_alive(int(found["pid"]))
        try:
            old = time.time() - path.stat().st_mtime > STALE_TMP_S
        except FileNotFoundError:  # another export removed it just now
            continue
        if dead or old:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _versions() -> dict[str, str]:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_pruning": version("torch-pruning"),
        "autoprune": __version__,
        "onnx": version("onnx"),
        "onnxruntime": version("onnxruntime"),
    }


def _same_form(inputs: Any, example: Any) -> bool:
    """Whether a batch's ``inputs`` can stand in for the example inputs: the same nesting (tensor, tuple, dict
    keys) and, tensor by tensor, the same dtype kind and per-sample shape."""
    if isinstance(example, torch.Tensor):
        return (
            isinstance(inputs, torch.Tensor)
            and inputs.shape[1:] == example.shape[1:]
            and inputs.is_floating_point() == example.is_floating_point()
        )
    if isinstance(example, dict):
        return isinstance(inputs, dict) and inputs.keys() == example.keys() and all(_same_form(inputs[k], v) for k, v in example.items())
    if isinstance(example, (tuple, list)):
        return (
            isinstance(inputs, (tuple, list))
            and len(inputs) == len(example)
            and all(_same_form(a, b) for a, b in zip(inputs, example, strict=True))
        )
    return type(inputs) is type(example)


def _first_rows(inputs: Any, count: int) -> Any:
    """The first ``count`` samples of every tensor in ``inputs`` (any nesting), copied to the CPU."""
    if isinstance(inputs, torch.Tensor):
        return inputs[:count].detach().cpu().clone()
    if isinstance(inputs, dict):
        return {k: _first_rows(v, count) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(_first_rows(v, count) for v in inputs)
    return inputs


def _probe(task: Task, loader: Any) -> Any:
    """A fixed batch for the reload checks: the first evaluation batch's inputs when they have the example
    inputs' form (a real ``(inputs, targets)`` batch, or a dict batch without its ``labels``), else the example
    inputs themselves."""
    example = to_device(task.example_inputs, "cpu")
    for batch in loader:
        if isinstance(batch, (tuple, list)) and batch and _same_form(batch[0], example):
            return _first_rows(batch[0], PROBE_SIZE)
        if has_labels(batch) and _same_form(without_labels(batch), example):  # a Hugging Face dict batch
            return _first_rows(to_device(without_labels(batch), "cpu"), PROBE_SIZE)
        break
    if isinstance(example, torch.Tensor) and example.is_floating_point():
        return torch.randn(PROBE_SIZE, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    return _first_rows(example, PROBE_SIZE)


def _input_shapes(inputs: Any) -> Any:
    """Each example tensor's shape, in the inputs' own nesting (a list, a list of them, or a dict)."""
    if isinstance(inputs, torch.Tensor):
        return list(inputs.shape)
    if isinstance(inputs, dict):
        return {k: _input_shapes(v) for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return [_input_shapes(v) for v in inputs]
    return type(inputs).__name__


def _architecture(task: Task, channels: dict[str, int]) -> dict[str, Any]:
    cfg = task.config
    example = task.example_inputs
    return {
        "builtin": cfg.model.builtin,
        "factory": cfg.model.factory,
        "options": dict(cfg.model.options),
        "torchvision": cfg.model.torchvision,
        "file": str(cfg.model.file) if cfg.model.file is not None else None,
        # Where the factory was imported from (the config's folder, the working directory): autoprune.load looks there.
        "factory_paths": [str(p.resolve()) for p in factory_search_paths(cfg)] if cfg.model.factory else [],
        "in_channels": first_channels(example, task.data.input_shape),
        "num_classes": int(cfg.model.num_classes or task.data.num_classes or 0),
        # The shorthand's per-sample shape; null for the inputs of a model.example_inputs factory.
        "input_shape": list(example.shape[1:]) if cfg.model.example_inputs is None else None,
        "example_inputs": {"file": EXAMPLE_INPUTS_FILE, "spec": cfg.model.example_inputs, "shapes": _input_shapes(example)},
        "channels": channels,
    }


def _sparsity_record(task: Task, model: torch.nn.Module, report: PruneReport, recovered: Recovered) -> dict[str, Any]:
    """Non-zero parameters and the gzip size of the weights, before and after; the sparsity of each layer."""
    nonzero, size = count_nonzero_params(model), compressed_bytes(model)
    base_size = task.base_compressed_bytes or compressed_bytes(task.base_model)
    return {
        "nonzero_params": {
            "before": report.nonzero_params_before,
            "after": nonzero,
            "relative": nonzero / report.nonzero_params_before,
        },
        "compressed_bytes": {"before": base_size, "after": size, "relative": size / base_size, "format": "gzip of torch.save(state_dict)"},
        "sparsity": recovered.sparsity,
    }


def _place(tmp: Path, out: Path, force: bool) -> None:
    """Move the finished folder into place; an old export (with ``force``) goes only once the new one is ready."""
    check_out_dir(out, force)
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{tmp.name}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    config: Config,
    selection: Selection,
    out: str | Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
    on_epoch: EpochHook | None = None,
) -> ExportResult:
    """What ``autoprune export`` runs: returns the export folder and its ``export.json`` record."""
    out = Path(out)
    check_out_dir(out, force)
    study = open_study(config.storage_url, config.study_name, create=False)
    try:
        base = base_point(study)
    except ValueError as exc:
        raise ConfigError(str(exc), key="study.name") from None
    trial = select_trial(study, selection, base.get("metric"))
    plan = PruningPlan.from_dict(trial.user_attrs["plan"])
    log(f"selected trial {trial.number} ({selection.describe()}): {plan.summary()}")

    task = prepare_task(config, log)
    if (task.base_macs, task.base_params) != (base.get("macs"), base.get("params")):
        raise ConfigError(
            f"the base model has {task.base_macs} MACs, {task.base_params} params; the study searched one with "
            f"{base.get('macs')} MACs, {base.get('params')} params: the config no longer matches the study",
            key="model",
        )
    if task.data.test is not None:
        eval_loader, split = task.data.test, "test"
    else:
        eval_loader, split = task.data.val, "val"
        log("warning: the data has no test split; the export is evaluated on the validation split")
    recovered = recover(
        task,
        plan,
        trial.number,
        eval_loader=eval_loader,
        split=split,
        on_epoch=on_epoch,
        log=log,
        search_finetune=FinetuneBudget.recorded(trial.user_attrs, config),  # a promoted finalist's longer one
        recorded=trial.user_attrs,
    )
    recreated = recovered.metrics["recreated_validation"]
    if abs(recreated - trial.values[0]) > REPRODUCE_TOLERANCE:
        log(f"warning: trial {trial.number} scored {config.metric} {trial.values[0]:.4f} on validation in the search, "
            f"its re-creation scores {recreated:.4f}: the base weights, data or training code changed since the search")
    model, report, ecfg = recovered.model, recovered.report, config.export

    runtime = task.runtime
    example = to_device(task.example_inputs, "cpu")  # the example inputs in their own form (tensor, tuple, dict)
    on_device: dict[str, Any] | None = None
    if runtime.torch_device.type != "cpu":
        on_device = latency_before_after(config, runtime, task.base_model, model, example)
    # The search's latency (its backend, device, batch), re-measured for the chosen model, beside the search's figure.
    search_latency = remeasure_search_latency(config, runtime, task.base_model, model, task.example_inputs, trial)
    # The artifacts are written from the CPU, where most pruned models are deployed; latency is measured there too.
    model, base_model = model.cpu(), task.base_model.cpu()
    on_cpu = latency_before_after(config, CPU, base_model, model, example)

    out.parent.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_tmp(out):
        log(f"removed {path.name}, left beside {out.name} by an export that was killed")
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out), dir=out.parent))
    try:
        probe = _probe(task, eval_loader)
        with torch.no_grad():
            expected = call_model(model.eval(), probe)  # every output tensor is compared on reload
        channels = {name: after_ for name, (_, after_) in report.channels.items()}
        ctx = ArtifactContext(
            tmp, probe, expected, plan, _architecture(task, channels), ecfg.onnx_exporter, example_inputs=example
        )
        artifacts = write_artifacts(model, ctx)
        (tmp / "config.resolved.yaml").write_text(dump_config(config))
        record = {
            "trial": trial.number,
            "selection": selection.describe(),
            "study": config.study_name,
            "plan": plan.to_dict(),
            "config_hash": config_hash(config),
            "channels": {name: list(pair) for name, pair in report.channels.items()},
            "macs": {"before": report.macs_before, "after": report.macs_after, "relative": report.macs_ratio},
            "params": {"before": report.params_before, "after": report.params_after, "relative": report.params_ratio},
            **_sparsity_record(task, model, report, recovered),
            "metric": {
                "name": config.metric,
                "split": split,
                **recovered.metrics,
                "search_validation": trial.values[0],
            },
            "latency": on_cpu,
            "latency_on_device": on_device,  # null when the run's device is the CPU
            "latency_search": search_latency,  # null when the search measured no latency
            "runtime": {"device": runtime.device, "precision": runtime.precision, "channels_last": runtime.channels_last},
            "recovery": {
                "epochs": ecfg.epochs,
                "lr": ecfg.lr,
                "schedule": {
                    **ecfg.schedule.model_dump(mode="json"),
                    "fractions": recovered.fractions,
                    "steps_reached": recovered.steps,
                },
                "seconds": recovered.seconds,
            },
            "artifacts": artifacts,
            "versions": _versions(),
        }
        (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
        _place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, record)

