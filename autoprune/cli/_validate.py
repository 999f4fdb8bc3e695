"""``autoprune validate CONFIG``: check a config against the real model and data without running anything."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from autoprune.cli._common import add_device_flag, load_with_overrides

__all__ = ["register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "validate", parents=[parent], help="check a config (schema, preset, model, data, globs) without running"
    )
    add_device_flag(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autoprune.engine import find_output_layers
    from autoprune.space import tie_summary
    from autoprune.study import base_source, check_worker_devices, describe_inputs, fit_search, resolve

    config = load_with_overrides(args, **{"runtime.device": args.device})
    check_worker_devices(config.workers.devices, config.runtime)  # as search checks it; export does not use it
    resolved = resolve(config)
    for warning in resolved.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    found = []
    if config.prune.structured:
        found.append(f"{len(resolved.groups)} prunable groups: {', '.join(g.name for g in resolved.groups)}")
        tying = tie_summary([g.name for g in resolved.groups], resolved.spec)
        if tying:
            found.append(tying)
        outputs = find_output_layers(resolved.model, resolved.example_inputs)
        if outputs:
            allowed = config.prune.allow_output_pruning
            kept = "prunable: prune.allow_output_pruning is true" if allowed else "never pruned"
            found.append(f"output layers ({kept}): {', '.join(outputs)}")
    if config.prune.unstructured_mode:
        found.append(f"{len(resolved.layers)} layers to sparsify: {', '.join(resolved.layers)}")
    found.append(f"example inputs: {describe_inputs(resolved.example_inputs)}")
    found.append(f"base weights: {base_source(config)}")
    found.append(f"runtime {resolved.runtime.device} {resolved.runtime.precision}")
    fitted = fit_search(config, resolved)  # what search will run; a config it refuses is refused here too
    print(f"{args.config}: OK; {'; '.join(found)}")
    for line in fitted.lines():
        print(line, file=sys.stderr if line.startswith("warning: ") else sys.stdout)
    for line in table_lines(config, resolved):
        print(line)
    return 0


def table_lines(config: Any, resolved: Any) -> list[str]:
    """The latency table and its staircase (prune.round_to auto's steps per group), when the run needs one."""
    from autoprune.evaluate import needs_latency_table
    from autoprune.study import cached_table, describe_table

    if not needs_latency_table(config) or not resolved.groups:
        return []
    model = resolved.runtime.place(resolved.model)
    table = cached_table(config, resolved.runtime, model, resolved.example_inputs, resolved.groups)
    if table is None:
        return ["latency table: not built yet for these latency settings; `autoprune profile CONFIG` builds it "
                "(search builds it on first need)"]  # fmt: skip
    return describe_table(table, auto_steps=config.prune.round_to == "auto")
