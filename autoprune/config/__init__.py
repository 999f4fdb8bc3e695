"""Typed configs: the YAML schema, loading with overrides, and one-line errors."""

from __future__ import annotations

from autoprune.config._load import config_from_dict, dump_config, load_config, load_yaml, validation_error
from autoprune.config._reference import config_json_schema, config_reference_markdown
from autoprune.config._schema import (
    Config,
    ConstraintsConfig,
    DataConfig,
    DistillConfig,
    ExportConfig,
    FinetuneConfig,
    LatencyConfig,
    ModelConfig,
    NNIConfigEntry,
    PruneConfig,
    RuntimeConfig,
    ScheduleConfig,
    SpaceSpec,
    StagesConfig,
    StudyConfig,
    TrainConfig,
    UnstructuredConfig,
    WorkersConfig,
)

__all__ = [
    "Config",
    "ConstraintsConfig",
    "DataConfig",
    "DistillConfig",
    "ExportConfig",
    "FinetuneConfig",
    "LatencyConfig",
    "ModelConfig",
    "NNIConfigEntry",
    "PruneConfig",
    "RuntimeConfig",
    "ScheduleConfig",
    "SpaceSpec",
    "StagesConfig",
    "StudyConfig",
    "TrainConfig",
    "UnstructuredConfig",
    "WorkersConfig",
    "config_json_schema",
    "config_reference_markdown",
    "config_from_dict",
    "dump_config",
    "load_config",
    "load_yaml",
    "validation_error",
]
