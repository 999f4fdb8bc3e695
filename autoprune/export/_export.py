"""``export_model``: pick a trial, recover it, measure it, write and verify the artifacts, atomically."""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from optuna.trial import FrozenTrial

from autoprune.config import Config, dump_config
from autoprune.engine import call_model, to_device
from autoprune.errors import ConfigError
from autoprune.evaluate import CPU
from autoprune.export._artifacts import ArtifactContext, write_artifacts
from autoprune.export._measure import latency_before_after, remeasure_search_latency, search_latency_line
from autoprune.export._record import Latencies, architecture_record, config_hash, export_record, probe_batch
from autoprune.export._recover import EpochHook, Recovered, recover
from autoprune.export._select import Selection, select_trial
from autoprune.plan import PruningPlan
from autoprune.study import (
    FinetuneBudget,
    Task,
    base_point,
    check_output_writable,
    open_study,
    prepare_task,
)

__all__ = ["EXPORT_FILE", "ExportResult", "check_out_dir", "config_hash", "export_model", "remove_stale_tmp", "tmp_prefix"]

EXPORT_FILE = "export.json"
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


def _select(config: Config, selection: Selection, log: Callable[[str], None]) -> tuple[FrozenTrial, PruningPlan, dict[str, Any]]:
    """The selected trial, its plan, and the study's base point."""
    study = open_study(config.storage_url, config.study_name, create=False)
    try:
        base = base_point(study)
    except ValueError as exc:
        raise ConfigError(str(exc), key="study.name") from None
    trial = select_trial(study, selection, base.get("metric"))
    plan = PruningPlan.from_dict(trial.user_attrs["plan"])
    log(f"selected trial {trial.number} ({selection.describe()}): {plan.summary()}")
    return trial, plan, base


def _check_same_base(task: Task, base: dict[str, Any]) -> None:
    if (task.base.macs, task.base.params) != (base.get("macs"), base.get("params")):
        raise ConfigError(
            f"the base model has {task.base.macs} MACs, {task.base.params} params; the study searched one with "
            f"{base.get('macs')} MACs, {base.get('params')} params: the config no longer matches the study",
            key="model",
        )


def _eval_split(task: Task, log: Callable[[str], None]) -> tuple[Any, str]:
    """The loader the export is evaluated on, and its split's name: the test split, else the validation one."""
    if task.data.test is not None:
        return task.data.test, "test"
    log("warning: the data has no test split; the export is evaluated on the validation split")
    return task.data.val, "val"


def _recover_trial(
    task: Task,
    trial: FrozenTrial,
    plan: PruningPlan,
    eval_loader: Any,
    split: str,
    on_epoch: EpochHook | None,
    log: Callable[[str], None],
) -> Recovered:
    """Re-create the trial and recover it; warn when the re-creation does not score what the search recorded."""
    config = task.config
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
    return recovered


def _measure(task: Task, trial: FrozenTrial, model: torch.nn.Module) -> tuple[torch.nn.Module, Latencies]:
    """Time the base and the recovered model; returns the recovered model moved to the CPU, and the figures."""
    config, runtime = task.config, task.runtime
    example = to_device(task.base.example_inputs, "cpu")  # the example inputs in their own form (tensor, tuple, dict)
    on_device: dict[str, Any] | None = None
    if runtime.torch_device.type != "cpu":
        on_device = latency_before_after(config, runtime, task.base.model, model, example)
    # The search's latency (its backend, device, batch), re-measured for the chosen model, beside the search's figure.
    search_latency = remeasure_search_latency(config, runtime, task.base.model, model, task.base.example_inputs, trial)
    # The artifacts are written from the CPU, where most pruned models are deployed; latency is measured there too.
    model, base_model = model.cpu(), task.base.model.cpu()
    on_cpu = latency_before_after(config, CPU, base_model, model, example)
    return model, Latencies(on_cpu, on_device, search_latency)


def _write(
    task: Task,
    trial: FrozenTrial,
    selection: Selection,
    plan: PruningPlan,
    model: torch.nn.Module,
    recovered: Recovered,
    latencies: Latencies,
    eval_loader: Any,
    tmp: Path,
) -> dict[str, Any]:
    """Write and verify the artifacts, the resolved config and ``export.json`` into ``tmp``; returns the record."""
    config, report = task.config, recovered.report
    example = to_device(task.base.example_inputs, "cpu")
    probe = probe_batch(task, eval_loader)
    with torch.no_grad():
        expected = call_model(model.eval(), probe)  # every output tensor is compared on reload
    channels = {name: after_ for name, (_, after_) in report.channels.items()}
    ctx = ArtifactContext(
        tmp, probe, expected, plan, architecture_record(task, channels), config.export.onnx_exporter, example_inputs=example
    )
    artifacts = write_artifacts(model, ctx)
    (tmp / "config.resolved.yaml").write_text(dump_config(config))
    record = export_record(task, trial, selection, plan, model, recovered, latencies, artifacts)
    (tmp / EXPORT_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def export_model(
    config: Config,
    selection: Selection,
    out: str | Path,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda _: None,
    on_epoch: EpochHook | None = None,
) -> ExportResult:
    """What ``autoprune export`` runs: returns the export folder and its ``export.json`` record.

    Select the trial, recover it, measure it, then write and verify the artifacts into a temporary folder that
    replaces ``out`` only once it is complete."""
    out = Path(out)
    check_out_dir(out, force)
    trial, plan, base = _select(config, selection, log)
    task = prepare_task(config, log)
    _check_same_base(task, base)
    eval_loader, split = _eval_split(task, log)
    recovered = _recover_trial(task, trial, plan, eval_loader, split, on_epoch, log)
    model, latencies = _measure(task, trial, recovered.model)

    out.parent.mkdir(parents=True, exist_ok=True)
    for path in remove_stale_tmp(out):
        log(f"removed {path.name}, left beside {out.name} by an export that was killed")
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix(out), dir=out.parent))
    try:
        record = _write(task, trial, selection, plan, model, recovered, latencies, eval_loader, tmp)
        _place(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ExportResult(out, record)
