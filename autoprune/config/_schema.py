"""The typed config: the schema is these classes. Unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from autoprune.criteria import CRITERIA
from autoprune.errors import did_you_mean
from autoprune.plan import SPARSITY_METHODS, SparsityMethod
from autoprune.schedules import SCHEDULES

__all__ = [
    "Config",
    "DistillConfig",
    "RuntimeConfig",
    "ConstraintsConfig",
    "DataConfig",
    "ExportConfig",
    "FinetuneConfig",
    "ModelConfig",
    "NNIConfigEntry",
    "PruneConfig",
    "ScheduleConfig",
    "SpaceSpec",
    "StudyConfig",
    "TrainConfig",
    "UnstructuredConfig",
    "WorkersConfig",
]

Granularity = Literal["shared", "per_stage", "per_group"]
SAMPLERS = ("tpe", "nsga2", "random", "gp")


def _known_sampler(name: str) -> str:
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}{did_you_mean(name, SAMPLERS)}; known: {', '.join(SAMPLERS)}")
    return name


Sampler = Annotated[str, AfterValidator(_known_sampler)]  # an Optuna sampler autoprune knows by name
PruneMode = Literal["structured", "unstructured"]


def _known_criterion(name: str) -> str:
    if name not in CRITERIA:
        known = ", ".join(CRITERIA.names())
        raise ValueError(f"unknown criterion {name!r}{did_you_mean(name, CRITERIA.names())}; known: {known}")
    return name


Ratio = Annotated[float, Field(ge=0.0, lt=1.0)]
CriterionName = Annotated[str, AfterValidator(_known_criterion)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class ModelConfig(_Strict):
    builtin: str | None = None
    factory: str | None = None
    file: Path | None = None  # a whole module saved with torch.save(model); needs trust_pickle
    trust_pickle: bool = False
    torchvision: str | None = None  # an architecture name; the optional extra
    weights: Path | None = None
    input_shape: list[int] | None = Field(default=None, min_length=1)
    num_classes: int | None = Field(default=None, gt=0)
    options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for the factory (or built-in builder)

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        sources = [k for k in ("builtin", "factory", "file", "torchvision") if getattr(self, k) is not None]
        if len(sources) != 1:
            raise ValueError(
                "set exactly one of model.builtin, model.factory, model.file or model.torchvision"
                + (f"; found {', '.join(sources)}" if sources else "")
            )
        if self.file is not None and not self.trust_pickle:
            raise ValueError(
                "model.file is a pickled module, and loading a pickle runs code stored in the file; "
                "set model.trust_pickle: true if you trust it, or save a state_dict and use model.weights"
            )
        return self

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and any(d <= 0 for d in v):
            raise ValueError(f"every dimension must be positive, found {v}")
        return v


class DataConfig(_Strict):
    builtin: str | None = None
    factory: str | None = None
    batch_size: int = Field(default=64, gt=0)
    val_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _default_source(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("builtin") is None and data.get("factory") is None:
            return {**data, "builtin": "digits"}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.builtin is not None and self.factory is not None:
            raise ValueError("set only one of data.builtin or data.factory")
        return self


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=0.05, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0)


def _known_loss(name: str) -> str:
    """A registered loss name, or ``"pkg.module:fn"`` (imported when the evaluator is built)."""
    if ":" in name:
        module, _, attr = name.partition(":")
        if not module or not attr:
            raise ValueError(f"expected a registered loss or 'pkg.module:fn', found {name!r}")
        return name
    from autoprune.evaluate._losses import LOSSES  # the registry lives with the training loop; loaded on use

    if name not in LOSSES:
        known = LOSSES.names()
        raise ValueError(f"unknown loss {name!r}{did_you_mean(name, known)}; known: {', '.join(known)} or 'pkg.module:fn'")
    return name


LossName = Annotated[str, AfterValidator(_known_loss)]
OptimizerName = Literal["sgd", "adamw"]


class DistillConfig(_Strict):
    """Knowledge distillation from the unpruned model: ``(1 - weight) * task loss + weight * T^2 * KL`` on logits."""

    weight: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=4.0, gt=0.0)


class FinetuneConfig(TrainConfig):
    epochs: int = Field(default=1, ge=0)
    lr: float = Field(default=0.01, gt=0.0)
    bn_recalibration_batches: int = Field(default=20, ge=0)
    steps: int | None = Field(default=None, ge=1)  # exactly this many optimizer steps (cycling the data); overrides epochs
    optimizer: OptimizerName = "sgd"
    loss: LossName = "cross_entropy"  # a registered loss, or "pkg.module:fn" with fn(model, batch) -> loss
    loss_options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for the loss
    distill: DistillConfig | None = None  # null: off
    val_batches: int | None = Field(default=None, ge=1)  # the search scores the first N validation batches; null: all


class SpaceSpec(_Strict):
    """How many knobs the search turns (one per group, per stage (module-name prefix), or one shared), how the
    ratio knobs become each group's ratio, and which uniform baselines start the search."""

    description: str = ""
    ratio: Granularity = "per_group"
    criterion: Granularity = "per_group"
    stage_depth: int = Field(default=1, ge=1)
    # independent: each ratio knob is its groups' ratio. global_offset: one global ratio plus an offset in
    # [-ratio_spread, ratio_spread] per ratio knob. depth_linear: one global ratio plus one slope, ratios from
    # global - slope at the first knob to global + slope at the last. Both clip into each group's bounds; the
    # global ratio alone moves a plan along the whole MACs axis, as a uniform sweep does.
    ratio_schedule: Literal["independent", "global_offset", "depth_linear"] = "independent"
    ratio_spread: float = Field(default=0.2, gt=0.0, lt=1.0)
    warm_start: bool = True
    warm_start_ratios: list[Ratio] = Field(default_factory=lambda: [0.25, 0.5, 0.75], min_length=1)
    # Each warm-start ratio with each of these criteria that the space searches (prune.criteria).
    warm_start_criteria: list[CriterionName] = Field(default_factory=lambda: ["l1", "l2", "fpgm"], min_length=1)

    @model_validator(mode="after")
    def _schedule_needs_knobs(self) -> SpaceSpec:
        if self.ratio_schedule != "independent" and self.ratio == "shared":
            raise ValueError(
                f"ratio_schedule {self.ratio_schedule!r} shapes ratios across per_stage or per_group knobs, "
                "found ratio: 'shared'; use ratio_schedule: independent for one shared ratio"
            )
        return self


# NNI 3.0 config_list keys autoprune cannot honour, with why; any other unknown key is an error too.
_NNI_UNSUPPORTED = {
    "sparse_threshold": "autoprune searches ratios; a threshold has no ratio to search",
    "granularity": "autoprune always prunes whole output channels",
    "global_group_id": "autoprune searches each group's ratio; there is no global ranking",
    "dependency_group_id": "DepGraph finds the coupled layers itself",
    "target_names": "autoprune prunes weights by output channel (biases and BatchNorms follow)",
    "target_settings": "give sparse_ratio / max_sparse_ratio at the top of the entry",
    "align": "DepGraph aligns coupled layers itself",
    "apply_method": "autoprune removes channels; it never masks",
    "internal_metric_block": "autoprune scores whole output channels",
    "fuse_names": "module fusion is a quantization setting",
    "sparsity": "an NNI 2 key: use sparse_ratio",
    "sparsity_per_layer": "an NNI 2 key: use sparse_ratio",
    "total_sparsity": "an NNI 2 key: autoprune searches per-group ratios; bound them with max_sparse_ratio",
    "max_sparsity_per_layer": "an NNI 2 key: use max_sparse_ratio",
    "exclude": "an NNI 2 key: use exclude_op_names / exclude_op_types",
    "op_partial_names": "an NNI 2 key: use op_names_re",
}


class NNIConfigEntry(_Strict):
    """One entry of an NNI 3.0 ``config_list``: selectors, then the ratio (see README, NNI compatibility).

    ``sparse_ratio`` fixes the ratio of the selected groups (clamped into [min, max] as NNI does);
    ``min_sparse_ratio`` / ``max_sparse_ratio`` alone bound the searched ratio. Later entries win.
    """

    op_types: list[str] | None = None
    op_names: list[str] | None = None
    op_names_re: list[str] | None = None
    exclude_op_names: list[str] = Field(default_factory=list)
    exclude_op_types: list[str] = Field(default_factory=list)
    exclude_op_names_re: list[str] = Field(default_factory=list)
    sparse_ratio: Ratio | None = None
    min_sparse_ratio: Ratio | None = None
    max_sparse_ratio: Ratio | None = None

    @model_validator(mode="before")
    @classmethod
    def _supported_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key in data:
                if key in _NNI_UNSUPPORTED:
                    raise ValueError(f"NNI key {key!r} is not supported by autoprune: {_NNI_UNSUPPORTED[key]}")
                if key not in cls.model_fields:
                    known = sorted(cls.model_fields)
                    raise ValueError(
                        f"unknown NNI config_list key {key!r}{did_you_mean(str(key), known)}; supported: {', '.join(known)}"
                    )
        return data

    @model_validator(mode="after")
    def _selects_and_bounds(self) -> NNIConfigEntry:
        if not (self.op_types or self.op_names or self.op_names_re):
            raise ValueError("an NNI config_list entry needs one of op_types, op_names, op_names_re")
        lo, hi = self.min_sparse_ratio, self.max_sparse_ratio
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_sparse_ratio {lo} is above max_sparse_ratio {hi}")
        return self


Sparsity = Annotated[float, Field(ge=0.0, lt=1.0)]


def _ordered(name: str, bounds: tuple[float, float]) -> tuple[float, float]:
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"{name} bounds are reversed: [{lo}, {hi}]; expected [low, high] with low <= high")
    return bounds


class UnstructuredConfig(_Strict):
    """``prune.mode: unstructured``: which ``torch.nn.utils.prune`` methods, and what per-layer sparsity, to search.

    ``global`` searches one amount ranked across every layer (``global_unstructured``, L1); the others one amount
    per layer (or per stage / shared, as the search space preset says).
    """

    methods: list[SparsityMethod] = Field(default_factory=lambda: list(SPARSITY_METHODS), min_length=1)
    sparsity: tuple[Sparsity, Sparsity] = (0.0, 0.95)

    @field_validator("sparsity")
    @classmethod
    def _sparsity_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ordered("sparsity", v)

    @field_validator("methods")
    @classmethod
    def _distinct_methods(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"methods are listed twice: {v}")
        return v


class PruneConfig(_Strict):
    # structured: remove channels (DepGraph); unstructured: zero single weights (torch.nn.utils.prune); both:
    # remove channels, then sparsify what survives.
    mode: tuple[PruneMode, ...] = ("structured",)
    unstructured: UnstructuredConfig = Field(default_factory=UnstructuredConfig)
    ignore: list[str] = Field(default_factory=list)
    # Layers whose channels reach a model output (classifier, segmentation head) are never pruned unless true.
    allow_output_pruning: bool = False
    round_to: int = Field(default=1, ge=1)
    search_space: str | SpaceSpec = "per_layer"
    ratio: tuple[Ratio, Ratio] = (0.0, 0.9)
    criteria: list[CriterionName] = Field(default_factory=lambda: ["l1", "l2", "fpgm"], min_length=1)
    criteria_scope: Literal["layer", "group"] = "layer"
    gradient_batches: int = Field(default=4, ge=1)  # training batches whose gradients gradient criteria (taylor) read
    nni_config_list: list[NNIConfigEntry] | None = None  # NNI 3.0 selectors + ratios: which groups, what bounds

    @field_validator("ratio")
    @classmethod
    def _ratio_bounds(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _ordered("ratio", v)

    @field_validator("mode", mode="before")
    @classmethod
    def _modes(cls, v: Any) -> Any:
        modes = [v] if isinstance(v, str) else v
        if isinstance(modes, (list, tuple)):
            if not modes:
                raise ValueError("name at least one mode: structured, unstructured, or both")
            if len(set(modes)) != len(modes):
                raise ValueError(f"modes are listed twice: {list(modes)}")
            order = ("structured", "unstructured")
            return tuple(sorted(modes, key=lambda m: order.index(m) if m in order else len(order)))
        return v

    @property
    def structured(self) -> bool:
        return "structured" in self.mode

    @property
    def unstructured_mode(self) -> bool:
        return "unstructured" in self.mode

    @field_validator("criteria")
    @classmethod
    def _distinct_criteria(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"criteria are listed twice: {v}")
        return v


class ConstraintsConfig(_Strict):
    max_macs: float | None = Field(default=None, gt=0.0, le=1.0)


class StudyConfig(_Strict):
    sampler: Sampler = "tpe"
    n_trials: int = Field(default=40, gt=0)
    timeout: float | None = Field(default=None, gt=0)
    seed: int = 0
    storage: str | None = None
    name: str | None = None
    max_consecutive_failures: int = Field(default=5, gt=0)


class ScheduleConfig(_Strict):
    """Gradual pruning at export: reach the plan in ``steps`` steps, fine-tuning ``step_epochs`` between them.

    ``linear``: step k of K reaches k/K of every ratio and sparsity (torch-pruning's ``iterative_steps``);
    ``polynomial``: 1 - (1 - k/K) ** exponent of them (Zhu & Gupta 2017; exponent 3 as in TensorFlow's
    model_pruning), which prunes fast while the model has redundancy and slowly near the target.
    """

    kind: str = "linear"
    steps: int = Field(default=1, ge=1)
    exponent: float = Field(default=3.0, gt=0.0)
    step_epochs: int = Field(default=1, ge=0)

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        if v not in SCHEDULES:
            names = SCHEDULES.names()
            raise ValueError(f"unknown schedule {v!r}{did_you_mean(v, names)}; known: {', '.join(names)}")
        return v


class ExportConfig(TrainConfig):
    """``autoprune export``: the recovery fine-tune, gradual pruning, and how latency is measured."""

    epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=0.01, gt=0.0)
    bn_recalibration_batches: int = Field(default=20, ge=0)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    latency_runs: int = Field(default=50, gt=0)
    latency_warmup: int = Field(default=10, ge=0)
    latency_threads: int = Field(default=1, gt=0)
    onnx_exporter: Literal["dynamo", "torchscript", "off"] = "dynamo"
    # The recovery fine-tune's recipe; optimizer, loss and loss_options are finetune's unless set here
    # (loss_options: {} when only export.loss is set).
    steps: int | None = Field(default=None, ge=1)  # the recovery fine-tune in optimizer steps; overrides epochs
    optimizer: OptimizerName | None = None
    loss: LossName | None = None
    loss_options: dict[str, Any] | None = None
    distill: DistillConfig | None = None  # null: off

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        renamed = {"iterative_steps": "export.schedule.steps", "step_epochs": "export.schedule.step_epochs"}
        for old, new in renamed.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"export.{old} is now {new}")
        return data


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


class Config(_Strict):
    name: str = Field(min_length=1)
    output: Path
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    metric: str = "accuracy"
    base_training: TrainConfig = Field(default_factory=TrainConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    # The cost objective: relative MACs, parameters, or non-zero parameters (what unstructured pruning lowers).
    # Default: macs, or nonzero_params when prune.mode includes unstructured.
    objectives: tuple[Literal["metric"], Literal["macs", "params", "nonzero_params"]] = ("metric", "macs")
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    # A user's evaluator, "pkg.module:factory", called with train_loader=, val_loader=, metric= and these options.
    evaluator: str | None = None
    evaluator_options: dict[str, Any] = Field(default_factory=dict)
    # The YAML file this config was loaded from (set by load_config); its folder is on the factories' import path.
    _source: Path | None = PrivateAttr(default=None)

    @property
    def source(self) -> Path | None:
        return self._source

    def __eq__(self, other: object) -> bool:  # where a config was loaded from is not part of it
        return type(other) is type(self) and self.__dict__ == other.__dict__

    @model_validator(mode="before")
    @classmethod
    def _default_cost(cls, data: Any) -> Any:
        if isinstance(data, dict) and "objectives" not in data and isinstance(data.get("prune"), dict):
            mode = data["prune"].get("mode")
            if mode == "unstructured" or (isinstance(mode, (list, tuple)) and "unstructured" in mode):
                return {**data, "objectives": ["metric", "nonzero_params"]}
        return data

    @model_validator(mode="after")
    def _recipe_is_the_builtin_evaluators(self) -> Config:
        if self.evaluator is None:
            if self.evaluator_options:
                raise ValueError("evaluator_options needs evaluator: 'pkg.module:factory'")
            return self
        if self.evaluator.count(":") != 1 or not all(self.evaluator.split(":")):
            raise ValueError(f"evaluator: expected 'pkg.module:factory', found {self.evaluator!r}")
        recipe = ("optimizer", "loss", "loss_options", "distill", "val_batches")
        for section in ("finetune", "export"):
            given = sorted(set(recipe) & getattr(self, section).model_fields_set)
            if given:
                raise ValueError(
                    f"{section}.{given[0]} configures the built-in evaluator; with evaluator: {self.evaluator!r} "
                    "the recipe is the evaluator's own (pass it in evaluator_options)"
                )
        return self

    @model_validator(mode="after")
    def _cost_matches_mode(self) -> Config:
        if self.prune.mode == ("unstructured",) and self.objectives[1] != "nonzero_params":
            raise ValueError(
                f"prune.mode unstructured zeroes weights but keeps every {self.objectives[1]!r} (objectives[1]); "
                "use objectives: [metric, nonzero_params]"
            )
        if self.prune.mode == ("unstructured",) and self.constraints.max_macs is not None:
            raise ValueError("constraints.max_macs cannot be met by prune.mode unstructured, which keeps every MAC")
        if self.prune.mode == ("unstructured",) and self.prune.nni_config_list is not None:
            raise ValueError("prune.nni_config_list bounds structured groups; prune.mode unstructured has none")
        return self

    @property
    def study_name(self) -> str:
        return self.study.name or self.name

    @property
    def storage_url(self) -> str:
        return self.study.storage or f"sqlite:///{(self.output / 'study.db').resolve()}"
