"""The Hugging Face config of a pruned model: which config keys hold its shapes, and their pruned values.

The config is the source of truth for shapes in transformers: ``from_pretrained`` builds the model from
``config.json``, then loads the weights. A pruned model has a ``save_pretrained`` folder only when one config
describes it: every attention of a type keeps the same heads, every MLP the same width. The keys per family are
registered rules (:func:`register_hf_config_rule`, by ``config.model_type``); the derived config is then checked
by building the model from it (on the meta device) and comparing every parameter's shape, so a family whose
config cannot express a pruned shape (BERT derives its head size as ``hidden_size / num_attention_heads``) is
refused in one line naming the first parameter that differs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autoprune._registry import Registry
from autoprune.engine._attention import find_attention_sites

__all__ = ["HF_CONFIG_RULES", "HfConfigRule", "HfShapeError", "derive_hf_config", "is_hf_model", "register_hf_config_rule"]


class HfShapeError(ValueError):
    """The pruned model's shapes have no config: the message (one line) says why."""


@dataclass(frozen=True)
class HfConfigRule:
    """The config keys of one family: query heads, KV heads, head dim, MLP width (with the suffix of the linear
    whose output width it is) and hidden size; None where the config has no such key."""

    heads: str | None
    mlp: tuple[str, str]
    hidden: str | None
    kv_heads: str | None = None
    head_dim: str | None = None
    # Encoder-decoder configs keep heads and MLP width per stack: (module-path component, heads key, MLP key),
    # in place of ``heads`` and ``mlp[0]``; a stack the model does not have (an encoder alone) sets nothing.
    stacks: tuple[tuple[str, str, str], ...] = ()


HF_CONFIG_RULES: Registry[HfConfigRule] = Registry("Hugging Face config rule")


def register_hf_config_rule(model_type: str, rule: HfConfigRule) -> None:
    HF_CONFIG_RULES.register(model_type)(rule)


_DECODER = HfConfigRule("num_attention_heads", ("intermediate_size", "mlp.gate_proj"), "hidden_size",
                        kv_heads="num_key_value_heads", head_dim="head_dim")  # fmt: skip
_BERT = HfConfigRule("num_attention_heads", ("intermediate_size", "intermediate.dense"), "hidden_size")
for _type in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "granite"):
    register_hf_config_rule(_type, _DECODER)
for _type in ("bert", "roberta", "electra", "xlm-roberta", "camembert"):
    register_hf_config_rule(_type, _BERT)
register_hf_config_rule("distilbert", HfConfigRule("n_heads", ("hidden_dim", "ffn.lin1"), "dim"))
register_hf_config_rule("albert", HfConfigRule("num_attention_heads", ("intermediate_size", "ffn"), "hidden_size"))
register_hf_config_rule("gpt2", HfConfigRule("n_head", ("n_inner", "mlp.c_fc"), "n_embd"))
register_hf_config_rule("gptj", HfConfigRule("n_head", ("n_inner", "mlp.fc_in"), "n_embd"))
register_hf_config_rule("t5", HfConfigRule("num_heads", ("d_ff", "DenseReluDense.wi"), "d_model", head_dim="d_kv"))
for _type in ("vit", "deit"):
    register_hf_config_rule(_type, HfConfigRule("num_attention_heads", ("intermediate_size", "mlp.fc1"), "hidden_size"))
_STACKS = (("encoder", "encoder_attention_heads", "encoder_ffn_dim"), ("decoder", "decoder_attention_heads", "decoder_ffn_dim"))
for _type in ("bart", "whisper"):
    register_hf_config_rule(_type, HfConfigRule(None, ("", "fc1"), "d_model", stacks=_STACKS))
for _type in ("clip_text_model", "clip_vision_model"):
    register_hf_config_rule(_type, HfConfigRule("num_attention_heads", ("intermediate_size", "mlp.fc1"), "hidden_size"))


def is_hf_model(model: nn.Module) -> bool:
    """Whether ``model`` is a transformers ``PreTrainedModel`` (it has a config and ``save_pretrained``)."""
    config = getattr(model, "config", None)
    return callable(getattr(model, "save_pretrained", None)) and callable(getattr(config, "to_dict", None))


def _one(values: dict[str, int], what: str) -> int:
    """The one value every layer has; else an HfShapeError naming two layers that differ."""
    distinct = sorted(set(values.values()))
    if not distinct:
        raise HfShapeError(f"no {what} found")
    if len(distinct) > 1:
        first = next(n for n, v in values.items() if v == distinct[0])
        other = next(n for n, v in values.items() if v == distinct[1])
        raise HfShapeError(
            f"the layers keep different {what} ({first}: {distinct[0]}, {other}: {distinct[1]}) and one config holds "
            "one value per family; search with prune.tie: [layers] for a save_pretrained folder"
        )
    return distinct[0]


def derive_hf_config(model: nn.Module, saved: nn.Module | None = None) -> Any:
    """A copy of ``model.config`` with the pruned shapes, read from ``model`` (the pruned model, whose Conv1D are
    ``nn.Linear`` twins) and checked against the weights of ``saved`` (what is saved; default ``model``).

    Raises HfShapeError (one line) when no rule knows the family, layers differ, or a model built from the
    derived config would not hold the pruned weights' shapes."""
    config = copy.deepcopy(model.config)
    model_type = str(getattr(config, "model_type", ""))
    if model_type not in HF_CONFIG_RULES:
        raise HfShapeError(f"no config rule for model_type {model_type!r} (register_hf_config_rule)")
    rule = HF_CONFIG_RULES.get(model_type)
    all_sites = [s for s in find_attention_sites(model) if s.unsupported is None]
    _, suffix = rule.mlp
    mlps = {n: int(m.out_features) for n, m in model.named_modules() if n.endswith(suffix) and isinstance(m, nn.Linear)}
    stacks = rule.stacks or (("", rule.heads or "", rule.mlp[0]),)
    updates: dict[str, int] = {}
    for component, heads_key, mlp_key in stacks:
        sites = [s for s in all_sites if not component or component in s.owner_name.split(".")]
        widths = {n: w for n, w in mlps.items() if not component or component in n.split(".")}
        if component and not sites and not widths:
            continue
        if sites and heads_key:
            groups = {s.owner_name: getattr(s, "groups", 1) for s in sites}
            updates[heads_key] = _one({s.owner_name: s.units * groups[s.owner_name] for s in sites}, "head counts")
        updates[mlp_key] = _one(widths, "MLP widths")
    if all_sites:
        if rule.kv_heads:
            updates[rule.kv_heads] = _one({s.owner_name: s.units for s in all_sites}, "KV head counts")
        if rule.head_dim:
            updates[rule.head_dim] = _one({s.owner_name: s.head_dim for s in all_sites}, "head dims")
        if rule.hidden:
            outputs = {p.name: p.linear.out_features for s in all_sites for p in s.projections if p.axis == "in"}
            updates[rule.hidden] = _one(outputs, "hidden sizes")
    for name, value in updates.items():
        setattr(config, name, value)
    _check_shapes(model if saved is None else saved, config, updates)
    return config


def _check_shapes(model: nn.Module, config: Any, updates: dict[str, int]) -> None:
    """Build the model from ``config`` on the meta device and compare every parameter's shape."""
    build: Callable[[Any], nn.Module] = type(model)
    try:
        with torch.device("meta"):
            reference = build(config)
    except Exception as exc:  # the config class refuses the values (e.g. hidden not a multiple of heads)
        raise HfShapeError(f"{type(config).__name__} with {updates} is refused: {str(exc).splitlines()[0]}") from None
    mine = {n: tuple(p.shape) for n, p in model.state_dict().items()}
    theirs = {n: tuple(p.shape) for n, p in reference.state_dict().items()}
    for name, shape in theirs.items():
        if mine.get(name) != shape:
            raise HfShapeError(
                f"{name} is {mine.get(name)} in the pruned model but {shape} in a {type(model).__name__} built from "
                f"the config with {updates}: the config cannot express this pruning"
            )
    extra = sorted(set(mine) - set(theirs))
    if extra:
        raise HfShapeError(f"the pruned model holds {extra[0]}, which a model built from the config has not")
