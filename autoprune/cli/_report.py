"""``autoprune report CONFIG [--out DIR]``: plots, CSVs and report.md from the study storage."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune.cli._common import load_with_overrides

__all__ = ["register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "report", parents=[parent], help="write pareto.png, ratios.png, hypervolume.png, CSVs and report.md"
    )
    parser.add_argument("--out", metavar="DIR", help="folder for the report files (default: the run folder)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from autoprune.report import open_existing_study, write_report
    from autoprune.study import check_output_writable

    config = load_with_overrides(args)
    out, key = (Path(args.out), "--out") if args.out else (config.output, "output")
    check_output_writable(out, key=key)  # before the storage is opened: a typo costs nothing
    study = open_existing_study(config)
    for path in write_report(study, out, max_macs=config.constraints.max_macs, key=key):
        print(path)
    return 0
