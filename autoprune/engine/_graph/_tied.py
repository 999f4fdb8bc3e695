"""Parameters shared by several modules (a language model's tied input embedding and ``lm_head``).

torch-pruning replaces a pruned weight by a new Parameter in each module it prunes, so a tied pair would come
out as two equal but separate tensors, and a ``save_pretrained`` folder would then hold both (or lose one).
The graph records the sharing before pruning and ties the pruned copies again; copies that differ are an error.
"""

from __future__ import annotations

from torch import nn

from autoprune.errors import PruningError

__all__ = ["SharedParameter", "retie", "shared_parameters"]

SharedParameter = list[tuple[str, nn.Module, str]]  # (module name, module, attribute) of every holder


def shared_parameters(model: nn.Module) -> list[SharedParameter]:
    """Each parameter held by more than one module, with its holders in model order."""
    holders: dict[int, SharedParameter] = {}
    for module_name, module in model.named_modules():
        for attr, param in module._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((module_name, module, attr))
    return [h for h in holders.values() if len(h) > 1]


def retie(shared: list[SharedParameter]) -> None:
    """Make every holder of a shared parameter hold the first holder's (pruned) one again."""
    for holders in shared:
        first_name, first, first_attr = holders[0]
        kept = first._parameters[first_attr]
        for name, module, attr in holders[1:]:
            param = module._parameters[attr]
            if param is kept or param is None or kept is None:
                continue
            if param.shape != kept.shape or not bool((param == kept).all()):
                raise PruningError(
                    f"tied parameter {first_name}.{first_attr} and {name}.{attr} differ after pruning "
                    f"({tuple(kept.shape)} vs {tuple(param.shape)}); add one of them to prune.ignore"
                )
            module._parameters[attr] = kept
