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
from autoprune.config._train_schema import (
    BaseTrainingConfig,
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    ScheduleConfig,
    TrainConfig,
)
from autoprune.config._types import _Strict, spec_or_name

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
    builtin: str | None = Field(
        default=None,
        description="A built-in model by name (autoprune.models), built with options.",
    )
    factory: str | None = Field(
        default=None,
        description="'pkg.module:fn' returning the model (an nn.Module), called with options; imported from beside "
                    "the config first.",
    )
    file: Path | None = Field(
        default=None,
        description="A whole module saved with torch.save(model); loading runs code stored in the file, so it needs "
                    "trust_pickle.",
    )
    trust_pickle: bool = Field(
        default=False,
        description="true: model.file is trusted and loaded (unpickling runs code stored in it).",
    )
    torchvision: str | None = Field(
        default=None,
        description="A torchvision architecture name (the torchvision extra), built without weights.",
    )
    weights: Path | None = Field(
        default=None,
        description="A state_dict to load into the model; it is the base, and no base training runs.",
    )
    pretrained: bool = Field(
        default=False,
        description="true: the model as built (the factory's, or the pickled module's, own weights) is the base: no "
                    "base training.",
    )
    input_shape: list[int] | None = Field(
        default=None, min_length=1,
        description="The shape of one example input without its batch dimension; the example input is zeros of [1, "
                    "*input_shape]. null: the data's shape.",
    )
    example_inputs: str | None = Field(
        default=None,
        description="'pkg.module:fn' returning the example inputs: a tensor, a tuple (positional arguments) or a dict"
                    " (keyword arguments).",
    )
    num_classes: int | None = Field(
        default=None, gt=0,
        description="The number of classes a built-in model is built for. null: the data's.",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the factory (or the built-in builder).",
    )

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
    builtin: str | None = Field(default=None, description="A built-in data set by name (digits unless factory is set).")
    factory: str | None = Field(
        default=None,
        description="'pkg.module:fn' returning the data: train and validation loaders (and optionally a test loader).",
    )
    batch_size: int = Field(default=64, gt=0, description="Batch size of the loaders.")
    val_fraction: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="Fraction of the training data held out for validation (built-in data sets).",
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the data set (or the factory).",
    )

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


def _cost_spec(name: str) -> str:
    """A cost name (macs, params, nonzero_params, latency, or one registered with ``register_cost``) or
    ``"pkg.module:fn"``; whether the name is registered is checked when the run is resolved."""
    return spec_or_name(name, "cost")


CostName = Annotated[str, AfterValidator(_cost_spec)]


class Config(_Strict):
    name: str = Field(min_length=1, description="The run's name: the study's name unless study.name is set.")
    output: Path = Field(
        description="The run folder: study.db (the default storage), trials.csv, config.resolved.yaml, the base "
                    "weights.",
    )
    model: ModelConfig = Field(description="The model to prune: exactly one of builtin, factory, file or torchvision.")
    data: DataConfig = Field(
        default_factory=DataConfig,
        description="The data: a built-in data set or a user's loader factory.",
    )
    metric: str = Field(
        default="accuracy",
        description="The task metric, higher is better: a registered name (accuracy, miou) or 'pkg.module:fn' with "
                    "fn(model, loader) -> float.",
    )
    base_training: BaseTrainingConfig = Field(
        default_factory=BaseTrainingConfig,
        description="Training of the base model when no weights are given (and model.pretrained is false).",
    )
    prune: PruneConfig = Field(
        default_factory=PruneConfig,
        description="What is pruned, by which criteria, over which search space.",
    )
    finetune: FinetuneConfig = Field(
        default_factory=FinetuneConfig,
        description="The short fine-tune every candidate gets in the search, and the built-in evaluator's recipe.",
    )
    objectives: tuple[Literal["metric"], CostName] = Field(
        default=("metric", "macs"),
        description="[metric, cost]: the metric is maximised, the cost (relative to the base) minimised. The cost is "
                    "macs, params, nonzero_params (what unstructured pruning lowers), latency (measured as latency: "
                    "says), a name registered with autoprune.evaluate.register_cost, or 'pkg.module:fn' returning a "
                    "Cost. Default: macs, or nonzero_params when prune.mode includes unstructured.",
    )
    constraints: ConstraintsConfig = Field(
        default_factory=ConstraintsConfig,
        description="Budgets: a candidate above one is scored but not fine-tuned, and cannot be on the front.",
    )
    study: StudyConfig = Field(
        default_factory=StudyConfig,
        description="The Optuna study: sampler, trials, storage, and the single or staged search.",
    )
    export: ExportConfig = Field(
        default_factory=ExportConfig,
        description="autoprune export: the recovery fine-tune and gradual pruning of the chosen trial.",
    )
    workers: WorkersConfig = Field(
        default_factory=WorkersConfig,
        description="Several workers on one study: local processes, GPUs, and the heartbeat that fails a dead "
                    "worker's trial.",
    )
    runtime: RuntimeConfig = Field(
        default_factory=RuntimeConfig,
        description="Where and how models run (device, precision, memory format), resolved once and handed down.",
    )
    latency: LatencyConfig = Field(
        default_factory=LatencyConfig,
        description="How latency is measured, in the search (objective or constraints.max_latency) and at export.",
    )
    evaluator: str | None = Field(
        default=None,
        description="A user's evaluator, 'pkg.module:factory', called with train_loader=, val_loader=, metric= and "
                    "evaluator_options; it recalibrates, fine-tunes and scores candidates instead of the built-in "
                    "one. null: the built-in evaluator.",
    )
    evaluator_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments for the evaluator factory.",
    )
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
