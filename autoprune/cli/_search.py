"""``autoprune search CONFIG``: run or resume the study."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from autoprune.cli._common import (
    add_device_flag,
    device_list,
    load_with_overrides,
    non_negative_int,
    positive_float,
    positive_int,
)

__all__ = ["register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("search", parents=[parent], help="run or resume the pruning search")
    parser.add_argument(
        "--n-trials",
        type=positive_int,
        metavar="N",
        help="study.n_trials: a single search's trials; a budgeted or staged search's compute, in single-search "
        "trials (it prints the trial count that buys)",
    )
    parser.add_argument("--timeout", type=positive_float, metavar="S", help="stop starting trials after S seconds")
    parser.add_argument("--seed", type=int, metavar="K", help="study seed (overrides `study.seed`)")
    parser.add_argument("--sampler", metavar="NAME", help="tpe, nsga2, random or gp")
    parser.add_argument("--workers", type=positive_int, metavar="N", help="local worker processes on the study")
    parser.add_argument(
        "--worker-index", type=non_negative_int, metavar="K", help="this worker's index (seeds its sampler)"
    )
    add_device_flag(parser)
    parser.add_argument(
        "--devices",
        type=device_list,
        metavar="I,J",
        help="one GPU per worker: worker k runs on cuda:{devices[k mod n]} (overrides `workers.devices`)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autoprune.cli._progress import SearchProgress, print_front
    from autoprune.study import SearchInterrupted, guard_storage, pareto_frame, search

    config = load_with_overrides(
        args,
        **{
            "study.n_trials": args.n_trials,
            "study.timeout": args.timeout,
            "study.seed": args.seed,
            "study.sampler": args.sampler,
            "workers.count": args.workers,
            "workers.devices": args.devices,
            "runtime.device": args.device,
        },
    )
    # A scheduler's SIGTERM ends the search as Ctrl-C does: the current trial fails as "interrupted", the rest stay.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        # A database that goes away outside the trial loop (while the study is joined, or the results written)
        # is the same one line as inside it.
        with guard_storage(config.storage_url), SearchProgress(config) as progress:
            study = search(
                config,
                log=progress.log,
                callbacks=[progress.on_trial],
                on_phase=progress.on_phase,
                on_ready=progress.on_ready,
                worker_index=args.worker_index,
            )
    except SearchInterrupted as interrupted:
        done = sum(t.state.name == "COMPLETE" for t in interrupted.study.trials)
        print(
            f"autoprune: interrupted; {done} trials are complete and kept; run the same command to resume",
            file=sys.stderr,
        )
        print_front(pareto_frame(interrupted.study), config)
        return 130
    print_front(pareto_frame(study), config)
    return 0
