"""The training sections of the config: base training, the candidates' fine-tune, distillation, and export's
recovery fine-tune with its gradual-pruning schedule."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from autoprune.config._types import _Strict, known_name, spec_or_name
from autoprune.schedules import SCHEDULES

__all__ = [
    "BaseTrainingConfig",
    "DistillConfig",
    "ExportConfig",
    "FinetuneConfig",
    "LossName",
    "OptimizerName",
    "ReconstructConfig",
    "ScheduleConfig",
    "TrainConfig",
]


OptimizerName = Literal["sgd", "adamw"]


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=0, description="Passes over the training data.")
    lr: float = Field(default=0.05, gt=0.0, description="Learning rate.")
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0, description="SGD momentum.")
    weight_decay: float = Field(default=5e-4, ge=0.0, description="L2 weight decay.")


def _loss_spec(name: str) -> str:
    """A loss name or ``"pkg.module:fn"``; whether the name is registered is checked when the run is resolved."""
    return spec_or_name(name, "loss")


LossName = Annotated[str, AfterValidator(_loss_spec)]


class BaseTrainingConfig(TrainConfig):
    optimizer: OptimizerName = Field(
        default="sgd",
        description="sgd, or adamw (what transformers are usually trained with).",
    )


class DistillConfig(_Strict):
    """Knowledge distillation from the unpruned model: ``(1 - weight) * task loss + weight * T^2 * KL`` on logits."""

    weight: float = Field(
        default=0.5,
        ge=0.0,
        le=1.0,
        description="Weight of the distillation term: (1 - weight) * task loss + weight * T^2 * KL.",
    )
    temperature: float = Field(default=4.0, gt=0.0, description="Softmax temperature T of the distillation term.")


class ReconstructConfig(_Strict):
    """Layer-wise reconstruction after pruning, before BatchNorm recalibration: every conv or linear layer that lost
    input channels is refitted by least squares to the base model's output of that layer, on calibration batches
    (the first training batches, in order). No gradient step: with epochs 0 it is the whole recovery."""

    batches: int = Field(default=16, ge=1, description="Calibration batches (the first training batches, in order).")
    ridge: float = Field(
        default=1e-3, ge=0.0,
        description="Ridge regularisation of each least-squares solve, relative to the mean diagonal of its normal "
                    "equations.",
    )
    positions: int = Field(
        default=4096, ge=1,
        description="Rows taken from each batch per layer at most (a conv's output positions, a linear's tokens), a "
                    "seeded subsample.",
    )


class FinetuneConfig(TrainConfig):
    epochs: int = Field(default=1, ge=0, description="Fine-tune epochs per candidate (steps overrides).")
    lr: float = Field(default=0.01, gt=0.0, description="Fine-tune learning rate.")
    bn_recalibration_batches: int = Field(
        default=20,
        ge=0,
        description="Training batches that re-estimate BatchNorm statistics after pruning, before scoring (0: none).",
    )
    steps: int | None = Field(
        default=None,
        ge=1,
        description="Exactly this many optimizer steps (cycling the data); overrides epochs. null: epochs.",
    )
    optimizer: OptimizerName = Field(default="sgd", description="The fine-tune optimizer: sgd or adamw.")
    loss: LossName = Field(
        default="cross_entropy",
        description="A registered loss (cross_entropy, label_smoothing, ...) or 'pkg.module:fn' with fn(model, batch)"
        " -> loss.",
    )
    loss_options: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments for the loss.")
    distill: DistillConfig | None = Field(
        default=None,
        description="Knowledge distillation from the unpruned model on the logits. null: off.",
    )
    val_batches: int | None = Field(
        default=None,
        ge=1,
        description="The search scores candidates on the first N validation batches. null: all of them.",
    )
    reconstruct: ReconstructConfig | None = Field(
        default=None,
        description="Layer-wise reconstruction of every candidate before BatchNorm recalibration (and before the "
                    "fine-tune, when there is one). null: off.",
    )


class ScheduleConfig(_Strict):
    """Gradual pruning at export: reach the plan in ``steps`` steps, fine-tuning ``step_epochs`` between them.

    ``linear``: step k of K reaches k/K of every ratio and sparsity (torch-pruning's ``iterative_steps``);
    ``polynomial``: 1 - (1 - k/K) ** exponent of them (Zhu & Gupta 2017; exponent 3 as in TensorFlow's
    model_pruning), which prunes fast while the model has redundancy and slowly near the target.
    """

    kind: str = Field(
        default="linear",
        description="The gradual-pruning schedule: linear (step k of K reaches k/K of the plan) or polynomial (1 - (1"
        " - k/K) ** exponent), or a registered one.",
    )
    steps: int = Field(default=1, ge=1, description="Pruning steps to reach the plan (1: at once).")
    exponent: float = Field(default=3.0, gt=0.0, description="The polynomial schedule's exponent.")
    step_epochs: int = Field(default=1, ge=0, description="Fine-tune epochs between two pruning steps.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, v: str) -> str:
        return known_name(v, "schedule", SCHEDULES.names())


class ExportConfig(TrainConfig):
    """``autoprune export``: the recovery fine-tune and gradual pruning (latency is timed as ``latency:`` says)."""

    epochs: int = Field(default=10, ge=0, description="Recovery fine-tune epochs of the exported model.")
    lr: float = Field(default=0.01, gt=0.0, description="Recovery fine-tune learning rate.")
    bn_recalibration_batches: int = Field(
        default=20,
        ge=0,
        description="Training batches that re-estimate BatchNorm statistics after pruning.",
    )
    schedule: ScheduleConfig = Field(
        default_factory=ScheduleConfig,
        description="Gradual pruning: reach the plan in steps, fine-tuning between them.",
    )
    onnx_exporter: Literal["dynamo", "torchscript", "off"] = Field(
        default="dynamo",
        description="How the ONNX artifact is written: dynamo, torchscript, or off (no ONNX file).",
    )
    steps: int | None = Field(
        default=None,
        ge=1,
        description="The recovery fine-tune in optimizer steps; overrides epochs. null: epochs.",
    )
    optimizer: OptimizerName | None = Field(
        default=None,
        description="The recovery fine-tune's optimizer. null: finetune.optimizer.",
    )
    loss: LossName | None = Field(default=None, description="The recovery fine-tune's loss. null: finetune.loss.")
    loss_options: dict[str, Any] | None = Field(
        default=None,
        description="Keyword arguments for the loss. null: finetune.loss_options ({} when only export.loss is set).",
    )
    distill: DistillConfig | None = Field(
        default=None,
        description="Knowledge distillation in the recovery fine-tune. null: off.",
    )
    reconstruct: ReconstructConfig | None = Field(
        default=None,
        description="Layer-wise reconstruction of the exported model after pruning, before BatchNorm recalibration "
                    "and the recovery fine-tune. null: off.",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        renamed = {
            "iterative_steps": "export.schedule.steps",
            "step_epochs": "export.schedule.step_epochs",
            # One latency meter: export times through it too, with the one `latency:` section.
            "latency_runs": "latency.runs",
            "latency_warmup": "latency.warmup",
            "latency_threads": "latency.threads",
        }
        for old, new in renamed.items():
            if isinstance(data, dict) and old in data:
                raise ValueError(f"export.{old} is now {new}")
        return data
