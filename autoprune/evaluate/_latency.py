"""Latency of one forward pass, by a registered backend, on the run's device and precision.

A backend is ``backend(model, inputs, run) -> seconds per timed call``: ``torch`` (eager, under the run's
autocast, the device synchronised before each reading of the clock), ``torch_compile`` and ``onnxruntime`` (the
exported graph on its CPU provider). A user's ``"pkg.module:fn"`` is called as ``fn(model, example_inputs)`` and
returns seconds (or a list of per-call seconds): TensorRT, a phone, a remote board. The median is the figure; the
interquartile range over the median is its spread.
"""

from __future__ import annotations

import copy
import io
import math
import platform
import statistics
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from autoprune._registry import Registry, import_callable, one_line
from autoprune.engine import call_model, make_permanent, to_device
from autoprune.errors import AutopruneError, ConfigError
from autoprune.evaluate._runtime import Runtime

__all__ = [
    "LATENCY_BACKENDS",
    "LatencyBackend",
    "LatencyRun",
    "Measurement",
    "batched",
    "get_latency_backend",
    "hardware_name",
    "measure_latency",
    "register_latency_backend",
]

BACKEND_KEY = "latency.backend"


@dataclass(frozen=True)
class LatencyRun:
    """How a backend measures: where (the runtime), how often, with how many CPU threads, and its options."""

    runtime: Runtime
    runs: int = 20
    warmup: int = 5
    threads: int = 1
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.runs <= 0 or self.warmup < 0 or self.threads <= 0:
            raise ValueError(f"latency runs and threads must be positive and warmup >= 0, found {self.runs}, {self.threads}, {self.warmup}")


@dataclass(frozen=True)
class Measurement:
    """One model's latency: the median of the timed calls and their quartiles, in milliseconds, and where."""

    median_ms: float
    q1_ms: float
    q3_ms: float
    runs: int
    batch: int
    backend: str
    device: str
    precision: str
    threads: int | None  # CPU threads; None on a GPU, where they do not set the speed
    seconds: float = 0.0  # wall time the measurement took, warm-up and export included
    source: str = "measured"  # or "predicted": read off a latency table (runs 0, quartiles at the median)

    @property
    def spread(self) -> float:
        """The interquartile range over the median: 0.05 means the middle half of the calls lay within 5%."""
        return (self.q3_ms - self.q1_ms) / self.median_ms if self.median_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "spread": self.spread}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in names})


LatencyBackend = Callable[[nn.Module, Any, LatencyRun], list[float]]  # -> seconds of each timed call


def _check_backend(name: str, obj: LatencyBackend) -> None:
    if not callable(obj):
        raise TypeError(f"latency backend {name!r} is {type(obj).__name__}, not callable")


LATENCY_BACKENDS: Registry[LatencyBackend] = Registry(
    "latency backend", entry_point_group="autoprune.latency_backends", check=_check_backend
)


def register_latency_backend(name: str) -> Callable[[LatencyBackend], LatencyBackend]:
    """``@register_latency_backend("tensorrt")`` on ``fn(model, inputs, run) -> [seconds per call]``."""
    return LATENCY_BACKENDS.register(name)


def batched(example: Any, batch: int) -> Any:
    """``example`` with every tensor's first dimension (its batch) made ``batch``, by repeating the first sample;
    tuples, lists and dicts are walked, scalars and non-tensors kept. Batch 1 of a batch-1 example is itself."""
    if isinstance(example, torch.Tensor):
        if example.dim() == 0 or example.shape[0] == batch:
            return example
        return example[:1].expand(batch, *example.shape[1:]).contiguous()
    if isinstance(example, Mapping):
        return {k: batched(v, batch) for k, v in example.items()}
    if isinstance(example, (list, tuple)):
        return type(example)(batched(v, batch) for v in example)
    return example


def _tensors(example: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The example's tensors with a name each (a dict's keys, else input_N), in call order."""
    if isinstance(example, torch.Tensor):
        yield "input_0", example
    elif isinstance(example, Mapping):
        for k, v in example.items():
            if isinstance(v, torch.Tensor):
                yield str(k), v
    elif isinstance(example, (list, tuple)):
        for i, v in enumerate(example):
            if isinstance(v, torch.Tensor):
                yield f"input_{i}", v


def batch_of(example: Any) -> int:
    """The batch size of an example input: its first tensor's first dimension (1 for scalars or no tensor)."""
    for _, tensor in _tensors(example):
        return int(tensor.shape[0]) if tensor.dim() else 1
    return 1


def _synchronizer(device: torch.device) -> Callable[[], None]:
    """What waits for the device's queued work: kernels run asynchronously, so the clock alone would lie."""
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    if device.type == "mps":
        return torch.mps.synchronize
    return lambda: None


def time_calls(call: Callable[[], Any], runs: int, warmup: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """Seconds of each of ``runs`` calls after ``warmup`` untimed ones, ``sync`` before each reading of the clock."""
    for _ in range(warmup):
        call()
    sync()
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        sync()
        times.append(time.perf_counter() - started)
    return times


class _cpu_threads:
    """``torch.set_num_threads(n)`` for the duration, on the CPU only (the caller's count is put back)."""

    def __init__(self, runtime: Runtime, threads: int) -> None:
        self.active = runtime.torch_device.type == "cpu"
        self.threads, self.saved = threads, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.active:
            torch.set_num_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        if self.active:
            torch.set_num_threads(self.saved)


@register_latency_backend("torch")
def torch_eager(model: nn.Module, inputs: Any, run: LatencyRun) -> list[float]:
    """Eager PyTorch on the run's device, under its autocast, in inference mode."""
    with torch.inference_mode(), _cpu_threads(run.runtime, run.threads), run.runtime.autocast():
        return time_calls(lambda: call_model(model, inputs), run.runs, run.warmup, _synchronizer(run.runtime.torch_device))


@register_latency_backend("torch_compile")
def torch_compiled(model: nn.Module, inputs: Any, run: LatencyRun) -> list[float]:
    """``torch.compile(model, **options)`` on the run's device. Dynamo's caches are reset first: every candidate is
    a new shape, and past its recompile limit Dynamo would fall back to eager without a word."""
    torch._dynamo.reset()
    compiled: Any = torch.compile(model, **dict(run.options))
    with torch.inference_mode(), _cpu_threads(run.runtime, run.threads), run.runtime.autocast():
        try:
            call_model(compiled, inputs)  # compiles; never timed
        except Exception as exc:  # inductor needs a C++ compiler on the CPU, Triton on a GPU
            raise ConfigError(f"torch.compile failed: {one_line(exc)}; use backend torch", key=BACKEND_KEY) from None
        return time_calls(lambda: call_model(compiled, inputs), run.runs, max(run.warmup, 1), _synchronizer(run.runtime.torch_device))


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(
            "the onnxruntime latency backend needs onnx and onnxruntime: pip install 'autoprune[onnx]'", key=BACKEND_KEY
        ) from None
    return onnxruntime


@register_latency_backend("onnxruntime")
def onnxruntime_cpu(model: nn.Module, inputs: Any, run: LatencyRun) -> list[float]:
    """The model exported to ONNX (the TorchScript exporter, or ``options: {exporter: dynamo}``) and run by
    onnxruntime's CPU provider with ``threads`` intra-op threads; fp32 whatever the run's precision."""
    ort = _import_onnxruntime()
    cpu = torch.device("cpu")
    if any(t.device != cpu for t in model.parameters()):
        model = copy.deepcopy(model).to(cpu)
    inputs = to_device(inputs, cpu)
    named = list(_tensors(inputs))
    args, kwargs = (((), dict(inputs)) if isinstance(inputs, Mapping) else
                    (tuple(inputs) if isinstance(inputs, (list, tuple)) else (inputs,), {}))  # fmt: skip
    buffer = io.BytesIO()
    options = {k: v for k, v in run.options.items() if k != "exporter"}
    dynamo = run.options.get("exporter", "torchscript") == "dynamo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporters' deprecation and tracer warnings say nothing about latency
        torch.onnx.export(  # into memory: a file-like object works, though the stubs name paths only
            model,
            args,
            buffer,  # type: ignore[arg-type]
            kwargs=kwargs or None,
            input_names=[n for n, _ in named],
            dynamo=dynamo,
            **options,
        )
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = run.threads
    session_options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), session_options, providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    feed = {name: tensor.numpy() for name, tensor in named if name in wanted}
    return time_calls(lambda: session.run(None, feed), run.runs, run.warmup)


def _user_backend(spec: str, search_paths: Iterable[str | Path]) -> LatencyBackend:
    fn = import_callable(spec, key=BACKEND_KEY, expected="fn(model, example_inputs) -> seconds", search_paths=search_paths)

    def measure(model: nn.Module, inputs: Any, run: LatencyRun) -> list[float]:
        try:
            with torch.no_grad():
                value = fn(model, inputs)
        except AutopruneError:
            raise
        except Exception as exc:  # user code fails in any way; the line names whose code and why
            raise ConfigError(f"latency backend {spec!r} raised {one_line(exc)}", key=BACKEND_KEY) from None
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        ok = values and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in values)
        if not ok:
            raise ConfigError(
                f"latency backend {spec!r} returned {value!r}; expected seconds (a positive number) or a list of them",
                key=BACKEND_KEY,
            )
        return [float(v) for v in values]

    return measure


def get_latency_backend(name: str, *, search_paths: Iterable[str | Path] = ()) -> LatencyBackend:
    """The registered backend ``name``, or the user's ``"pkg.module:fn"`` (imported from ``search_paths`` first)."""
    if ":" in name:
        return _user_backend(name, search_paths)
    return LATENCY_BACKENDS.get(name, key=BACKEND_KEY)


def hardware_name(runtime: Runtime) -> str:
    """What the figures were measured on: the GPU's name, or the CPU's model (a shared cache keeps them apart)."""
    device = runtime.torch_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return f"mps {platform.machine()}"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def measure_latency(
    model: nn.Module,
    example_inputs: Any,
    run: LatencyRun,
    *,
    backend: str = "torch",
    batch_size: int | None = None,
    search_paths: Iterable[str | Path] = (),
) -> Measurement:
    """Time ``model`` on ``example_inputs`` (made ``batch_size`` wide; default: as given) with ``backend``, in eval
    mode, on the run's device (where ``model`` is). A model holding sparsity masks is timed with the masks
    folded into its weights, as it would be deployed."""
    started = time.perf_counter()
    fn = get_latency_backend(backend, search_paths=search_paths)
    batch = batch_size or batch_of(example_inputs)
    inputs = run.runtime.to_device(batched(example_inputs, batch))
    if any(torch_prune.is_pruned(m) for m in model.modules()):
        model = copy.deepcopy(model)
        make_permanent(model)
    was_training = model.training
    model.eval()
    try:
        times = sorted(fn(model, inputs, run))
    finally:
        model.train(was_training)
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    cpu = backend == "onnxruntime" or run.runtime.torch_device.type == "cpu"
    return Measurement(
        median_ms=statistics.median(times) * 1e3,
        q1_ms=q1 * 1e3,
        q3_ms=q3 * 1e3,
        runs=len(times),
        batch=batch,
        backend=backend,
        device="cpu" if backend == "onnxruntime" else run.runtime.device,
        precision="fp32" if backend == "onnxruntime" else run.runtime.precision,
        threads=run.threads if cpu and ":" not in backend else None,
        seconds=time.perf_counter() - started,
    )
