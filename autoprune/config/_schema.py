"""The typed config: the schema is these classes. Unknown keys are errors."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from autoprune.config._prune_schema import NNIConfigEntry, PruneConfig, SpaceSpec, UnstructuredConfig
from autoprune.config._study_schema import (
    ConstraintsConfig,
    LatencyConfig,
    RuntimeConfig,
    StagesConfig,
    StudyConfig,
    WorkersConfig,
)
from autoprune.config._types import _Strict, known_name, registered_or_spec
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
    "StagesConfig",
    "StudyConfig",
    "TrainConfig",
    "UnstructuredConfig",
    "WorkersConfig",
    "LatencyConfig",
]


class ModelConfig(_Strict):
    builtin: str | None = None
    factory: str | None = None
    file: Path | None = None  # a whole module saved with torch.save(model); needs trust_pickle
    trust_pickle: bool = False
    torchvision: str | None = None  # an architecture name; the optional extra
    weights: Path | None = None
    # true: the model as built (the factory's, or the pickled module's, own weights) is the base: no base training
    pretrained: bool = False
    input_shape: list[int] | None = Field(default=None, min_length=1)  # the shorthand: zeros of [1, *input_shape]
    # "pkg.module:fn" returning the example inputs: a tensor, a tuple (positional) or a dict (keyword arguments)
    example_inputs: str | None = None
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
        if self.input_shape is not None and self.example_inputs is not None:
            raise ValueError(
                "set one of model.input_shape (zeros of that shape) or model.example_inputs (a factory), not both"
            )
        if self.pretrained:
            refused = {
                "weights": "model.weights replaces the model's own weights, model.pretrained: true keeps them",
                "builtin": "the built-in models start from random weights; give model.weights for trained ones",
                "torchvision": "torchvision models are built without weights; give model.weights (a state_dict)",
            }
            for key, why in refused.items():
                if getattr(self, key) is not None:
                    raise ValueError(f"model.pretrained: true with model.{key}: {why}")
        return self

    @field_validator("example_inputs")
    @classmethod
    def _factory_spec(cls, v: str | None) -> str | None:
        if v is not None and not all(v.partition(":")[::2]):
            raise ValueError(f"expected 'pkg.module:fn', found {v!r}")
        return v

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


OptimizerName = Literal["sgd", "adamw"]


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=0)
    lr: float = Field(default=0.05, gt=0.0)
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0)


class BaseTrainingConfig(TrainConfig):
    optimizer: OptimizerName = "sgd"  # adamw: what transformers are usually trained with


def _loss_names() -> list[str]:
    from autoprune.evaluate._losses import LOSSES  # the registry lives with the training loop; loaded on use

    return LOSSES.names()


def _known_loss(name: str) -> str:
    """A registered loss name, or ``"pkg.module:fn"`` (imported when the evaluator is built)."""
    return registered_or_spec(name, "loss", _loss_names)


LossName = Annotated[str, AfterValidator(_known_loss)]


class DistillConfig(_Strict):
    """Knowledge distillation from the unpruned model: ``(1 - weight) * task loss + weight * T^2 * KL`` on logits."""

    weight: float = Field(default=0.5, ge=0.0, le=1.0)
    temperature: float = Field(default=4.0, gt=0.0)


class FinetuneConfig(TrainConfig):
    epochs: int = Field(default=1, ge=0)
    lr: float = Field(default=0.01, gt=0.0)
    bn_recalibration_batches: int = Field(default=20, ge=0)
    steps: int | None = Field(
        default=None, ge=1
    )  # exactly this many optimizer steps (cycling the data); overrides epochs
    optimizer: OptimizerName = "sgd"
    loss: LossName = "cross_entropy"  # a registered loss, or "pkg.module:fn" with fn(model, batch) -> loss
    loss_options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments for the loss
    distill: DistillConfig | None = None  # null: off
    val_batches: int | None = Field(default=None, ge=1)  # the search scores the first N validation batches; null: all


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
        return known_name(v, "schedule", SCHEDULES.names())


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


class Config(_Strict):
    name: str = Field(min_length=1)
    output: Path
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    metric: str = "accuracy"
    base_training: BaseTrainingConfig = Field(default_factory=BaseTrainingConfig)
    prune: PruneConfig = Field(default_factory=PruneConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    # The cost objective: relative MACs, parameters, non-zero parameters (what unstructured pruning lowers), or
    # latency (measured as `latency:` says). Default: macs, or nonzero_params when prune.mode includes unstructured.
    objectives: tuple[Literal["metric"], Literal["macs", "params", "nonzero_params", "latency"]] = ("metric", "macs")
    constraints: ConstraintsConfig = Field(default_factory=ConstraintsConfig)
    study: StudyConfig = Field(default_factory=StudyConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    workers: WorkersConfig = Field(default_factory=WorkersConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    latency: LatencyConfig = Field(default_factory=LatencyConfig)
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
        if self.prune.mode == ("unstructured",) and self.constraints.max_latency is not None:
            raise ValueError(
                "constraints.max_latency cannot be met by prune.mode unstructured, which keeps every channel"
            )
        if self.prune.mode == ("unstructured",) and self.prune.nni_config_list is not None:
            raise ValueError("prune.nni_config_list bounds structured groups; prune.mode unstructured has none")
        return self

    @property
    def study_name(self) -> str:
        return self.study.name or self.name

    @property
    def storage_url(self) -> str:
        return self.study.storage or f"sqlite:///{(self.output / 'study.db').resolve()}"
