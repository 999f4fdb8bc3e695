"""A home for NNI users: NNI 3.0 ``config_list`` support and an NNI-style ``AutoPruner``.

NNI itself is not needed here (``pip install autoprune[nni]`` adds it, for the cross-checks against its
pruners); channels are always removed by autoprune's DepGraph engine, never by NNI's ModelSpeedup::

    from autoprune.nni import AutoPruner, Evaluator
    pruner = AutoPruner(model, config_list, evaluator=Evaluator(evaluate, train), dummy_input=x,
                        search={"n_trials": 30, "criteria": ["l1", "fpgm"], "max_macs": 0.5})
    pruned_model, plan = pruner.compress()
"""

from __future__ import annotations

from autoprune.config import NNIConfigEntry
from autoprune.nni._pruner import AutoPruner, Evaluator, SearchOptions
from autoprune.space import config_list_bounds, parse_config_list, plan_to_config_list

__all__ = [
    "AutoPruner",
    "Evaluator",
    "NNIConfigEntry",
    "SearchOptions",
    "config_list_bounds",
    "parse_config_list",
    "plan_to_config_list",
]
