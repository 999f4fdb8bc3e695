"""``autoprune export CONFIG (--trial N | --max-macs F | --max-latency F | --min-metric F | --knee) --out DIR``."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from autoprune.cli._common import (
    add_device_flag,
    load_with_overrides,
    number,
    positive_float,
    positive_int,
    trial_number,
)
from autoprune.cli._console import ConsoleProgress

__all__ = ["ExportProgress", "register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "export", parents=[parent], help="recover a trial off the front and write deployable artifacts"
    )
    choose = parser.add_mutually_exclusive_group(required=True)
    choose.add_argument("--trial", type=trial_number, metavar="N", help="export trial N")
    choose.add_argument("--max-macs", type=positive_float, metavar="F", help="best metric with MACs <= F of the base")
    choose.add_argument(
        "--max-latency", type=positive_float, metavar="F", help="best metric with measured latency <= F of the base"
    )
    choose.add_argument(
        "--max-cost", type=positive_float, metavar="F", help="best metric with the cost objective <= F of the base"
    )
    choose.add_argument(
        "--budget", type=positive_float, metavar="F", help="a budgeted search's pick at its budget F (study.budgets)"
    )
    choose.add_argument("--min-metric", type=number, metavar="F", help="lowest cost with metric >= F")
    choose.add_argument("--knee", action="store_true", help="the knee point of the front")
    parser.add_argument("--out", required=True, metavar="DIR", help="export folder (must not exist, unless --force)")
    parser.add_argument("--force", action="store_true", help="replace an existing export folder")
    parser.add_argument("--epochs", type=positive_int, metavar="N", help="recovery epochs (overrides `export.epochs`)")
    parser.add_argument(
        "--iterative-steps", type=positive_int, metavar="K", help="prune in K steps (overrides `export.schedule.steps`)"
    )
    add_device_flag(parser)
    parser.set_defaults(handler=run)


def selection_from(args: argparse.Namespace) -> Any:
    from autoprune.export import Selection

    if args.knee:
        return Selection("knee")
    for rule in ("trial", "max_macs", "max_latency", "max_cost", "budget", "min_metric"):
        value = getattr(args, rule)
        if value is not None:
            return Selection(rule, value)
    raise AssertionError("argparse requires one selection flag")  # pragma: no cover


class ExportProgress(ConsoleProgress):
    """A bar per training phase on a terminal; one plain line per epoch elsewhere (CI logs)."""

    def __init__(self, console: Console | None = None) -> None:
        super().__init__(console)
        self._bars: dict[str, Any] = {}

    def columns(self) -> tuple[Any, ...]:
        return (
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("epochs"),
            TimeElapsedColumn(),
            TextColumn("{task.fields[loss]}"),
        )

    def on_epoch(self, phase: str, epoch: int, epochs: int, loss: float) -> None:
        if self._progress is None:
            self.log(f"{phase}: epoch {epoch}/{epochs}, loss {loss:.4f}")
            return
        if phase not in self._bars:
            self._bars[phase] = self._progress.add_task(phase, total=epochs, loss="")
        self._progress.update(self._bars[phase], completed=epoch, loss=f"loss {loss:.4f}")


def run(args: argparse.Namespace) -> int:
    from autoprune.export import export_model

    config = load_with_overrides(
        args,
        **{"export.epochs": args.epochs, "export.schedule.steps": args.iterative_steps, "runtime.device": args.device},
    )
    with ExportProgress() as progress:
        result = export_model(
            config, selection_from(args), args.out, force=args.force, log=progress.log, on_epoch=progress.on_epoch
        )
    print(result.summary())
    return 0
