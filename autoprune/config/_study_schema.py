"""The ``study:``, ``constraints:``, ``latency:``, ``workers:`` and ``runtime:`` sections: how the search runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
)

from autoprune.config._types import Sampler, _Strict, spec_or_name


class ConstraintsConfig(_Strict):
    max_macs: float | None = Field(default=None, gt=0.0, le=1.0)
    # Relative to the base model's latency, measured as `latency:` says; over-budget candidates are not fine-tuned.
    max_latency: float | None = Field(default=None, gt=0.0, le=1.0)


def _latency_backend_spec(name: str) -> str:
    """A latency backend name (torch, onnxruntime, torch_compile) or ``"pkg.module:fn"``; whether the name is
    registered is checked when the run is resolved."""
    return spec_or_name(name, "latency backend")


class LatencyConfig(_Strict):
    """How a candidate's latency is measured when ``objectives`` or ``constraints.max_latency`` ask for it: on
    the run's device and precision, ``warmup`` calls, then the median of ``runs`` timed ones."""

    # torch (eager), onnxruntime (the exported graph, CPU provider), torch_compile, or "pkg.module:fn" with
    # fn(model, example_inputs) -> seconds (TensorRT, a phone, a remote board).
    backend: Annotated[str, AfterValidator(_latency_backend_spec)] = "torch"
    batch_size: int = Field(default=1, gt=0)
    runs: int = Field(default=20, gt=0)
    warmup: int = Field(default=5, ge=0)
    threads: int = Field(default=1, gt=0)  # torch / onnxruntime intra-op threads on the CPU
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for the backend


class ScreenConfig(_Strict):
    """Stage 1 of a staged search: plans scored after BatchNorm recalibration alone, no backward pass."""

    share: float = Field(default=0.3, gt=0.0, lt=1.0)  # of the budget; the finalists get the rest (and the leftover)


class BandsConfig(_Strict):
    """Finalists are taken band by band, so that every part of the cost axis gets some: ``count`` log-spaced bands
    of the relative cost from ``low`` to 1 (a plan below ``low`` falls in the first band)."""

    count: int = Field(default=4, ge=1)
    low: float = Field(default=0.01, gt=0.0, lt=1.0)


class PromoteConfig(_Strict):
    """Successive halving: rung 0 is the configured fine-tune; each next rung fine-tunes the best 1/``factor``
    of the one before (band by band) ``factor`` times longer."""

    rungs: int = Field(default=2, ge=1)
    factor: int = Field(default=3, ge=2)


class StagesConfig(_Strict):
    """``study.search: staged``: screen many plans cheaply, then fine-tune the best of each band, then promote."""

    # In optimizer steps plus forward batches; null: study.n_trials standard trials (recalibrate, score, fine-tune,
    # score), so a staged and a single search with the same n_trials spend the same compute.
    budget: int | None = Field(default=None, ge=1)
    screen: ScreenConfig = Field(default_factory=ScreenConfig)
    bands: BandsConfig = Field(default_factory=BandsConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)


SearchMode = Literal["single", "staged"]
DEFAULT_SEARCH: SearchMode = "single"  # single: every trial fine-tuned as configured; staged: see StagesConfig


class StudyConfig(_Strict):
    sampler: Sampler = "tpe"
    n_trials: int = Field(default=40, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = 0
    storage: str | None = None
    name: str | None = None
    max_consecutive_failures: int = Field(default=5, gt=0)
    search: SearchMode = DEFAULT_SEARCH
    stages: StagesConfig = Field(default_factory=StagesConfig)

    @field_validator("stages")
    @classmethod
    def _stages_need_staged(cls, v: StagesConfig, info: ValidationInfo) -> StagesConfig:
        if info.data.get("search") == "single" and v != StagesConfig():
            raise ValueError("configures the staged search; set study.search: staged to use it")
        return v


class WorkersConfig(_Strict):
    """Several workers on one study: local processes, and the heartbeat that fails a dead worker's trial."""

    count: int = Field(default=1, ge=1)  # local worker processes (`--workers`); more machines: run search again
    heartbeat_interval: int = Field(default=10, gt=0)  # seconds between a running trial's heartbeats
    grace_period: int | None = Field(default=None, gt=0)  # seconds without one before FAIL; null: 2x interval
    # One GPU per worker: worker i runs on cuda:{devices[i % len(devices)]} (`--devices 0,1`); null: runtime.device
    devices: list[Annotated[int, Field(ge=0)]] | None = Field(default=None, min_length=1)


class RuntimeConfig(_Strict):
    """Where and how models run: resolved once into ``autoprune.evaluate.Runtime`` and handed down."""

    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps; auto: cuda if available, else mps, else cpu
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast in fine-tune, recalibration, evaluation
    channels_last: bool = False
