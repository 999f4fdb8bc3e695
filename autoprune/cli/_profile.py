"""``autoprune profile CONFIG``: build (or read) the run's latency table and print it, with its staircase."""

from __future__ import annotations

import argparse
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from autoprune.cli._common import add_device_flag, load_with_overrides
from autoprune.cli._console import ConsoleProgress

__all__ = ["register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "profile",
        parents=[parent],
        help="time each prunable group at a grid of widths (the latency table, cached in the run folder)",
    )
    add_device_flag(parser)
    parser.set_defaults(handler=run)


class TableProgress(ConsoleProgress):
    """The table's entries timed, on a bar (a terminal) or a line every tenth (logs); see ConsoleProgress."""

    def columns(self) -> tuple[Any, ...]:
        return (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("left"), TimeRemainingColumn())  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from autoprune.study import check_output_writable, describe_table, latency_table, resolve

    config = load_with_overrides(args, **{"runtime.device": args.device})
    resolved = resolve(config)
    if not resolved.groups:
        print(f"{args.config}: no prunable group: nothing to profile")
        return 0
    check_output_writable(config.output)
    model = resolved.runtime.place(resolved.model)
    with TableProgress() as progress:
        table = latency_table(config, resolved.runtime, model, resolved.example_inputs, resolved.groups, log=progress.log)
    for line in describe_table(table, auto_steps=config.prune.round_to == "auto"):
        print(line)
    return 0
