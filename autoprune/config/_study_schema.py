"""The ``study:``, ``constraints:``, ``latency:``, ``workers:`` and ``runtime:`` sections: how the search runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autoprune.config._types import Sampler, _Strict, spec_or_name


class ConstraintsConfig(_Strict):
    max_macs: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="The largest relative MACs a candidate may have; candidates above it are scored but not "
                    "fine-tuned. null: no budget.",
    )
    max_latency: float | None = Field(
        default=None, gt=0.0, le=1.0,
        description="The largest latency relative to the base model's, measured as latency: says; over-budget "
                    "candidates are not fine-tuned. null: no budget.",
    )


def _latency_backend_spec(name: str) -> str:
    """A latency backend name (torch, onnxruntime, torch_compile) or ``"pkg.module:fn"``; whether the name is
    registered is checked when the run is resolved."""
    return spec_or_name(name, "latency backend")


class LatencyConfig(_Strict):
    """How a candidate's latency is measured when ``objectives`` or ``constraints.max_latency`` ask for it: on
    the run's device and precision, ``warmup`` calls, then the median of ``runs`` timed ones."""

    backend: Annotated[str, AfterValidator(_latency_backend_spec)] = Field(
        default="torch",
        description="torch (eager), onnxruntime (the exported graph, CPU provider), torch_compile, a registered "
                    "backend, or 'pkg.module:fn' with fn(model, example_inputs) -> seconds (TensorRT, a phone, a "
                    "remote board).",
    )
    batch_size: int = Field(
        default=1, gt=0,
        description="The batch the search times candidates at (the example input repeated).",
    )
    runs: int = Field(default=20, gt=0, description="Timed calls per measurement; the figure is their median.")
    warmup: int = Field(default=5, ge=0, description="Untimed calls before the timed ones.")
    threads: int = Field(default=1, gt=0, description="torch / onnxruntime intra-op threads on the CPU.")
    options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the backend.")
    mode: Literal["measured", "predicted", "both"] = Field(
        default="measured",
        description="measured: time every candidate; predicted: read its latency off the latency table (built once "
                    "per device, backend and settings, cached in the run folder); both: search on the prediction "
                    "and time every fine-tuned candidate too, recording both figures.",
    )
    table_points: int = Field(
        default=8, ge=2,
        description="The latency table's kept-channel counts per group (evenly spaced up to the group's width); "
                    "autoprune profile times each, the other groups at their base width.",
    )
    table_plans: int = Field(
        default=12, ge=0,
        description="Random plans the latency table also times, to fit its prediction (latency against MACs and "
                    "the groups' deviations); 0: no fit, the uniform curve plus the deviations.",
    )


class ScreenConfig(_Strict):
    """Stage 1 of a staged search: plans scored after BatchNorm recalibration alone, no backward pass."""

    share: float = Field(
        default=0.3, gt=0.0, lt=1.0,
        description="The screen's share of the budget; the finalists get the rest (and the leftover).",
    )
    recalibration_batches: int | None = Field(
        default=None, ge=0,
        description="A screen's BatchNorm recalibration batches. null: a fine-tuned candidate's "
                    "(finetune.bn_recalibration_batches).",
    )
    val_batches: int | None = Field(
        default=None, ge=1,
        description="The validation batches a screen is scored on. null: those a fine-tuned candidate is scored on.",
    )


class BandsConfig(_Strict):
    """Finalists are taken band by band, so that every part of the cost axis gets some: ``count`` log-spaced bands
    of the relative cost from ``low`` to 1 (a plan below ``low`` falls in the first band)."""

    count: int = Field(
        default=4, ge=1,
        description="Log-spaced bands of the relative cost, from low to 1; finalists are taken band by band.",
    )
    low: float = Field(
        default=0.01, gt=0.0, lt=1.0,
        description="The lower end of the first band (a plan below it falls in the first band).",
    )


class PromoteConfig(_Strict):
    """Successive halving: rung 0 is the configured fine-tune; each next rung fine-tunes the best 1/``factor``
    of the one before (band by band) ``factor`` times longer."""

    rungs: int = Field(default=2, ge=1, description="Rungs of successive halving; rung 0 is the configured fine-tune.")
    factor: int = Field(
        default=3, ge=2,
        description="Each rung fine-tunes the best 1/factor of the one before (band by band), factor times longer.",
    )


class StagesConfig(_Strict):
    """``study.search: staged`` or ``budgeted``: screen many plans cheaply, then fine-tune the best of each band (or
    budget), then promote. ``bands`` are the staged search's alone: the budgeted search's bands are its budgets."""

    budget: int | None = Field(
        default=None, ge=1,
        description="The staged search's compute, in optimizer steps plus forward batches. null: what study.n_trials "
                    "standard trials cost, so a staged and a single search with the same n_trials spend the same "
                    "compute.",
    )
    screen: ScreenConfig = Field(
        default_factory=ScreenConfig,
        description="Stage 1: plans scored after BatchNorm recalibration alone.",
    )
    bands: BandsConfig = Field(
        default_factory=BandsConfig,
        description="How the cost axis is split so that every part of it gets finalists.",
    )
    promote: PromoteConfig = Field(default_factory=PromoteConfig, description="Successive halving of the finalists.")


class AllocationConfig(_Strict):
    """``study.search: budgeted``: how each budget's allocations (importance scales per ratio knob, criteria,
    scope) are proposed. Screens come in rounds of ``round_size``: round 0 is the hand-picked baselines, and every
    later round is proposed from the finished rounds before it alone, so workers and a resumed search make the
    same proposals."""

    optimizer: str = Field(
        default="tpe",
        description="A registered allocation optimizer (autoprune.space.ALLOCATION_OPTIMIZERS): tpe (Optuna's "
                    "TPESampler on this budget's screens), cmaes (CmaEsSampler), evolution (regularised evolution), "
                    "random.",
    )
    round_size: int = Field(
        default=4, ge=1,
        description="Screens proposed together, from the rounds finished before them (round 0: the baselines).",
    )


def _budget_list(v: list[float]) -> list[float]:
    if len(set(v)) != len(v):
        raise ValueError(f"budgets are listed twice: {v}")
    return sorted(v, reverse=True)


def _baseline_name(v: str) -> str:
    basis, _, criterion = v.partition("-")
    if basis not in ("uniform", "global") or not criterion:
        raise ValueError(f"{v!r} is not a baseline; write basis-criterion, e.g. uniform-l2 or global-l2")
    return v


Budget = Annotated[float, Field(gt=0.0, lt=1.0)]
SearchMode = Literal["single", "staged", "budgeted"]
# budgeted: every candidate built at one of study.budgets, hand-picked baselines screened first, the best
# fine-tuned per budget; single: every trial fine-tuned as configured; staged: see StagesConfig.
DEFAULT_SEARCH: SearchMode = "budgeted"
DEFAULT_BUDGETS = (0.5, 0.25, 0.1, 0.05)


class StudyConfig(_Strict):
    sampler: Sampler = Field(default="tpe", description="The Optuna sampler: tpe, nsga2, random or gp.")
    n_trials: int = Field(
        default=40, gt=0,
        description="study.search single: the trials the study holds when it is done (a resumed or joined study "
                    "counts those it has). staged and budgeted: the compute of this many single-search trials, spent "
                    "on cheap screens and fine-tunes, so the study holds more trials; search, validate and the summary "
                    "print the count. Too little for every budget's baselines: fewer budgets, then fewer baselines, "
                    "then a single search, said in one line.",
    )
    timeout: float | None = Field(
        default=None, gt=0,
        description="Seconds after which no new trial starts. null: none.",
    )
    seed: int = Field(default=0, description="Seeds the sampler, the data split and each trial's fine-tune.")
    storage: str | None = Field(
        default=None,
        description="An Optuna storage URL (sqlite:///..., postgresql://..., a journal file). null: output/study.db.",
    )
    name: str | None = Field(default=None, description="The study's name in the storage. null: the config's name.")
    max_consecutive_failures: int = Field(
        default=5, gt=0,
        description="The search stops after this many failed trials in a row.",
    )
    search: SearchMode = Field(
        default=DEFAULT_SEARCH,
        description="budgeted: every candidate built at one of study.budgets, the hand-picked baselines screened "
                    "first and the best of each budget fine-tuned and promoted; single: every trial fine-tuned as "
                    "configured; staged: screen many plans cheaply, then fine-tune and promote the best of each "
                    "cost band (study.stages).",
    )
    stages: StagesConfig = Field(
        default_factory=StagesConfig,
        description="study.search staged or budgeted: the compute, the screen, the bands (staged) and the promotion.",
    )
    budgets: Annotated[list[Budget], AfterValidator(_budget_list)] = Field(
        default_factory=lambda: list(DEFAULT_BUDGETS), min_length=1,
        description="study.search budgeted: the relative costs (of objectives[1]: MACs, params or latency) every "
                    "candidate is built at. Default budgets out of the model's reach are dropped with a warning.",
    )
    budget_weights: list[Annotated[float, Field(gt=0.0)]] | None = Field(
        default=None,
        description="study.search budgeted: each budget's share of the compute, in the order budgets are given. "
                    "null: an even split.",
    )
    allocation: AllocationConfig = Field(
        default_factory=AllocationConfig,
        description="study.search budgeted: how each budget's allocations are proposed.",
    )
    baselines: list[Annotated[str, AfterValidator(_baseline_name)]] | None = Field(
        default=None, min_length=1,
        description="study.search budgeted: the hand-picked baselines each budget screens first, as "
                    "basis-criterion (uniform-l2, global-l1; global is Torch-Pruning's global ranking). null: uniform "
                    "with every criterion, then global with l1 and l2.",
    )

    @field_validator("stages")
    @classmethod
    def _stages_need_staged(cls, v: StagesConfig, info: ValidationInfo) -> StagesConfig:
        search = info.data.get("search")
        if search == "single" and v != StagesConfig():
            raise ValueError("configures the staged search; set study.search: staged (or budgeted) to use it")
        if search == "budgeted" and v.bands != BandsConfig():
            raise ValueError("bands split a staged search's cost axis; the budgeted search's bands are study.budgets")
        return v

    @model_validator(mode="before")
    @classmethod
    def _weights_in_given_order(cls, data: Any) -> Any:
        # budget_weights pair with budgets as written; sorted here with them, before budgets is sorted.
        if isinstance(data, dict) and isinstance(data.get("budgets"), list) and isinstance(data.get("budget_weights"), list):
            budgets, weights = data["budgets"], data["budget_weights"]
            if len(budgets) == len(weights) and all(isinstance(b, (int, float)) for b in budgets):
                order = sorted(range(len(budgets)), key=lambda i: -float(budgets[i]))
                data = {**data, "budgets": [budgets[i] for i in order], "budget_weights": [weights[i] for i in order]}
        return data

    @field_validator("budgets", "budget_weights", "allocation", "baselines")
    @classmethod
    def _budget_keys_need_budgeted(cls, v: Any, info: ValidationInfo) -> Any:
        name = str(info.field_name)
        search = info.data.get("search")
        if search not in (None, "budgeted") and v != cls.model_fields[name].get_default(call_default_factory=True):
            raise ValueError(f"configures the budget-targeted search; set study.search: budgeted to use it (found {search!r})")
        if name == "budget_weights" and v is not None and "budgets" in info.data and len(v) != len(info.data["budgets"]):
            raise ValueError(f"has {len(v)} entries for {len(info.data['budgets'])} budgets; give one weight per budget")
        return v

    @property
    def weights(self) -> tuple[float, ...]:
        """Each budget's share of the compute, summing to 1, in the order of ``budgets``."""
        given = self.budget_weights or [1.0] * len(self.budgets)
        return tuple(w / sum(given) for w in given)


class WorkersConfig(_Strict):
    """Several workers on one study: local processes, and the heartbeat that fails a dead worker's trial."""

    count: int = Field(
        default=1, ge=1,
        description="Local worker processes on the study (--workers); more machines: run search again with the same "
                    "storage.",
    )
    heartbeat_interval: int = Field(default=10, gt=0, description="Seconds between a running trial's heartbeats.")
    grace_period: int | None = Field(
        default=None, gt=0,
        description="Seconds without a heartbeat before a trial is failed. null: twice heartbeat_interval.",
    )
    devices: list[Annotated[int, Field(ge=0)]] | None = Field(
        default=None, min_length=1,
        description="One GPU per worker: worker i runs on cuda:{devices[i % len(devices)]} (--devices 0,1). null: "
                    "runtime.device.",
    )


class RuntimeConfig(_Strict):
    """Where and how models run: resolved once into ``autoprune.evaluate.Runtime`` and handed down."""

    device: str = Field(
        default="auto",
        description="auto, cpu, cuda, cuda:N or mps; auto: cuda if available, else mps, else cpu. A device asked for "
                    "but missing is an error.",
    )
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32",
        description="fp32, bf16 or fp16: autocast in fine-tune, recalibration and evaluation (fp16 needs a GPU).",
    )
    channels_last: bool = Field(default=False, description="true: models in channels-last memory format.")
