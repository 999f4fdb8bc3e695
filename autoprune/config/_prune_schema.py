"""The ``prune:`` section: what is pruned, by which criteria, over which search space."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from autoprune.config._types import (
    DEFAULT_CRITERIA_SCOPE,
    CriterionName,
    Granularity,
    MacsFraction,
    Positive,
    PruneMode,
    Ratio,
    ScopeName,
    _ordered,
    _Strict,
    known_name,
)
from autoprune.errors import did_you_mean
from autoprune.plan import SCOPES, SPARSITY_METHODS, SparsityMethod
from autoprune.ranking import NORMALIZERS


def _schedule_name(name: str) -> str:
    """A ratio schedule's name; whether it is registered is checked when the run is resolved."""
    if not name.isidentifier():
        raise ValueError(f"expected a ratio schedule name (independent, global_offset, depth_linear, global_rank), found {name!r}")
    return name


class SpaceSpec(_Strict):
    """How many knobs the search turns (one per group, per stage (module-name prefix), or one shared), how the
    ratio knobs become each group's ratio, and which uniform baselines start the search."""

    description: str = Field(default="", description="What the preset searches, in a line.")
    ratio: Granularity = Field(
        default="per_group",
        description="How many ratio knobs: one shared, one per stage (module-name prefix), or one per group.",
    )
    criterion: Granularity = Field(
        default="per_group",
        description="How many criterion knobs: one shared, one per stage, or one per group.",
    )
    stage_depth: int = Field(
        default=1, ge=1,
        description="How many leading components of a group's name make its stage (per_stage).",
    )
    ratio_schedule: Annotated[str, AfterValidator(_schedule_name)] = Field(
        default="independent",
        description="How the ratio knobs become each group's ratio. independent: each knob is its groups' ratio; "
                    "global_offset: one global ratio plus an offset in [-ratio_spread, ratio_spread] per knob; "
                    "depth_linear: one global ratio plus a slope from the first knob to the last; global_rank (LeGR):"
                    " one global target plus a scale per knob on normalised channel importances, ratios from one "
                    "threshold across all groups; or a schedule registered with "
                    "autoprune.space.register_ratio_schedule.",
    )
    ratio_spread: float = Field(
        default=0.2, gt=0.0, lt=1.0,
        description="global_offset and depth_linear: the largest offset (or slope) around the global ratio.",
    )
    scale_range: tuple[Positive, Positive] = Field(
        default=(0.5, 2.0),
        description="global_rank: the range of the per-knob importance scales (log-uniform).",
    )
    target: Literal["ratio", "macs"] = Field(
        default="ratio",
        description="global_rank: what the global knob sets: a fraction of all channels (ratio) or relative MACs "
                    "(macs, log-uniform in macs_range).",
    )
    macs_range: tuple[MacsFraction, MacsFraction] = Field(
        default=(0.01, 1.0),
        description="global_rank with target macs: the range of the relative-MACs target.",
    )
    normalizer: str = Field(
        default="mean",
        description="global_rank: the per-group normaliser of channel importances (a registered name: mean, max, sum,"
                    " ...).",
    )
    warm_start: bool = Field(
        default=True,
        description="true: the study first queues uniform baselines (warm_start_ratios x warm_start_criteria).",
    )
    warm_start_ratios: list[Ratio] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75], min_length=1,
        description="The uniform ratios of the warm start.",
    )
    warm_start_criteria: list[CriterionName] = Field(
        default_factory=lambda: ["l1", "l2", "fpgm"], min_length=1,
        description="The criteria each warm-start ratio is tried with (those the space searches).",
    )

    @field_validator("scale_range", "macs_range")
    @classmethod
    def _ordered_range(cls, v: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        return _ordered(str(info.field_name), v)

    @field_validator("normalizer")
    @classmethod
    def _known_normalizer(cls, v: str) -> str:
        return known_name(v, "normalizer", NORMALIZERS.names())

    @field_validator("scale_range", "target", "macs_range", "normalizer", mode="after")
    @classmethod
    def _global_rank_only(cls, v: Any, info: ValidationInfo) -> Any:
        # A field check, not a model one, so the error names this key (ratio_schedule is validated before it).
        name = str(info.field_name)
        schedule = info.data.get("ratio_schedule")
        if schedule not in (None, "global_rank") and v != cls.model_fields[name].default:
            raise ValueError(f"{name} shapes ratio_schedule: global_rank, found ratio_schedule {schedule!r}")
        return v

    @model_validator(mode="after")
    def _schedule_needs_knobs(self) -> SpaceSpec:
        if self.ratio_schedule not in ("independent", "global_rank") and self.ratio == "shared":
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
    """One entry of an NNI 3.0 ``config_list``: selectors, then the ratio (see docs/nni.md).

    ``sparse_ratio`` fixes the ratio of the selected groups (clamped into [min, max] as NNI does);
    ``min_sparse_ratio`` / ``max_sparse_ratio`` alone bound the searched ratio. Later entries win.
    """

    op_types: list[str] | None = Field(
        default=None,
        description="Select groups whose root module's type is one of these (Conv2d, Linear, ...).",
    )
    op_names: list[str] | None = Field(
        default=None,
        description="Select groups whose root module has one of these names.",
    )
    op_names_re: list[str] | None = Field(
        default=None,
        description="Select groups whose root module's name matches one of these regular expressions.",
    )
    exclude_op_names: list[str] = Field(default_factory=list, description="Leave out these module names.")
    exclude_op_types: list[str] = Field(default_factory=list, description="Leave out these module types.")
    exclude_op_names_re: list[str] = Field(
        default_factory=list,
        description="Leave out module names matching these regular expressions.",
    )
    sparse_ratio: Ratio | None = Field(
        default=None,
        description="Fix the selected groups' ratio (clamped into [min_sparse_ratio, max_sparse_ratio], as NNI does).",
    )
    min_sparse_ratio: Ratio | None = Field(
        default=None,
        description="The lowest searched ratio of the selected groups.",
    )
    max_sparse_ratio: Ratio | None = Field(
        default=None,
        description="The highest searched ratio of the selected groups.",
    )

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


class UnstructuredConfig(_Strict):
    """``prune.mode: unstructured``: which ``torch.nn.utils.prune`` methods, and what per-layer sparsity, to search.

    ``global`` searches one amount ranked across every layer (``global_unstructured``, L1); the others one amount
    per layer (or per stage / shared, as the search space preset says).
    """

    methods: list[SparsityMethod] = Field(
        default_factory=lambda: list(SPARSITY_METHODS), min_length=1,
        description="The torch.nn.utils.prune methods searched: l1_unstructured, random_unstructured (per layer), "
                    "global (one amount ranked across all layers).",
    )
    sparsity: tuple[Sparsity, Sparsity] = Field(
        default=(0.0, 0.95),
        description="[low, high] bounds of the searched sparsity (the fraction of weights zeroed).",
    )

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
    mode: tuple[PruneMode, ...] = Field(
        default=("structured",),
        description="structured: remove channels (DepGraph); unstructured: zero single weights "
                    "(torch.nn.utils.prune); both: remove channels, then sparsify what survives.",
    )
    unstructured: UnstructuredConfig = Field(
        default_factory=UnstructuredConfig,
        description="prune.mode unstructured: which torch.nn.utils.prune methods and sparsities are searched.",
    )
    ignore: list[str] = Field(
        default_factory=list,
        description="Globs of module names never pruned (their channels stay).",
    )
    allow_output_pruning: bool = Field(
        default=False,
        description="true: layers whose channels reach a model output (a classifier, a segmentation head) may be "
                    "pruned.",
    )
    round_to: Annotated[int, Field(ge=1)] | Literal["auto"] = Field(
        default=1,
        description="Kept channels are rounded up to a multiple of this (hardware-friendly widths); auto: up to the "
                    "next count the latency table shows is not slower than any larger count of the group (the "
                    "latency staircase; built as latency: says).",
    )
    search_space: str | SpaceSpec = Field(
        default="per_layer",
        description="A preset name (uniform, per_stage, per_layer, global_offset, global_rank, tied_layers), a path "
                    "to a preset YAML file, or an inline spec.",
    )
    tie: list[Literal["layers"]] = Field(
        default_factory=list,
        description="[layers]: every repeated block of one type shares its ratio and criterion knobs (same heads, "
                    "same MLP width in every layer: what a standard Hugging Face config can hold).",
    )
    ratio: tuple[Ratio, Ratio] = Field(
        default=(0.0, 0.9),
        description="[low, high] bounds of every group's pruning ratio (the fraction of its channels removed).",
    )
    criteria: list[CriterionName] = Field(
        default_factory=lambda: ["l1", "l2", "fpgm"], min_length=1,
        description="The importance criteria searched (registered names: l1, l2, fpgm, taylor, lamp, bn_scale, "
                    "random, or your own).",
    )
    criteria_scope: ScopeName | list[ScopeName] = Field(
        default=DEFAULT_CRITERIA_SCOPE,
        description="Which weights a criterion scores: the root layer's own (layer: the papers' and NNI's choice) or "
                    "every coupled layer's (group: DepGraph's). A list is searched: one knob, recorded in each plan.",
    )
    gradient_batches: int = Field(
        default=4, ge=1,
        description="Training batches whose gradients gradient criteria (taylor) read.",
    )
    nni_config_list: list[NNIConfigEntry] | None = Field(
        default=None,
        description="An NNI 3.0 config_list: selectors and ratios saying which groups are pruned and within what "
                    "bounds.",
    )

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

    @field_validator("criteria_scope", mode="before")
    @classmethod
    def _scopes(cls, v: Any) -> Any:
        given = v if isinstance(v, list) else [v]
        for scope in given:
            if scope not in SCOPES:
                hint = did_you_mean(str(scope), SCOPES) if isinstance(scope, str) else ""
                raise ValueError(f"expected layer, group or a list of them, found {scope!r}{hint}")
        if isinstance(v, list) and (not v or len(set(v)) != len(v)):
            raise ValueError(f"a searched criteria_scope lists layer and/or group once each, found {v}")
        return v

    @property
    def scopes(self) -> tuple[ScopeName, ...]:
        """The criteria scopes: one, or the searched ones (the first is the warm start's)."""
        return tuple(self.criteria_scope) if isinstance(self.criteria_scope, list) else (self.criteria_scope,)

    @property
    def structured(self) -> bool:
        return "structured" in self.mode

    @property
    def channel_multiple(self) -> int:
        """What kept channels round up to a multiple of: round_to, or 1 with auto (the table's steps instead)."""
        return 1 if self.round_to == "auto" else self.round_to

    @property
    def unstructured_mode(self) -> bool:
        return "unstructured" in self.mode

    @model_validator(mode="after")
    def _auto_round_needs_channels(self) -> PruneConfig:
        if self.round_to == "auto" and not self.structured:
            raise ValueError("round_to auto snaps kept channels to fast counts; prune.mode unstructured keeps them all")
        return self

    @field_validator("criteria")
    @classmethod
    def _distinct_criteria(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"criteria are listed twice: {v}")
        return v
