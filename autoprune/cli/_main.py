from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from autoprune.errors import AutopruneError

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}")
    return value


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("config", help="YAML config file")
    parent.add_argument("--output", metavar="DIR", help="run folder (overrides `output`)")
    parent.add_argument("--storage", metavar="URL", help="Optuna storage URL (overrides `study.storage`)")
    parent.add_argument("--study-name", metavar="NAME", help="study name (overrides `study.name`)")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoprune", description=__doc__)
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    parent = _config_parent()

    search = commands.add_parser("search", parents=[parent], help="run or resume the pruning search")
    search.add_argument("--n-trials", type=_positive_int, metavar="N", help="total trials for the study")
    search.add_argument("--timeout", type=_positive_float, metavar="S", help="stop starting trials after S seconds")
    search.add_argument("--seed", type=int, metavar="K", help="study seed (overrides `study.seed`)")
    search.add_argument("--sampler", metavar="NAME", help="tpe, nsga2, random or gp")
    search.set_defaults(handler=_cmd_search)
    return parser


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "output": getattr(args, "output", None),
        "study.storage": getattr(args, "storage", None),
        "study.name": getattr(args, "study_name", None),
        "study.n_trials": getattr(args, "n_trials", None),
        "study.timeout": getattr(args, "timeout", None),
        "study.seed": getattr(args, "seed", None),
        "study.sampler": getattr(args, "sampler", None),
    }


def _cmd_search(args: argparse.Namespace) -> int:
    from autoprune.cli._progress import SearchProgress, print_front
    from autoprune.config import load_config
    from autoprune.study import pareto_frame, search

    config = load_config(args.config, _overrides(args))
    progress = SearchProgress(config)
    with progress:
        study = search(
            config,
            log=progress.log,
            callbacks=[progress.on_trial],
            on_phase=progress.on_phase,
            on_ready=progress.on_ready,
        )
    print_front(pareto_frame(study), config)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import optuna

    # Our own progress lines replace Optuna's per-trial INFO log; warnings still show.
    optuna.logging.set_verbosity(optuna.logging.DEBUG if args.debug else optuna.logging.WARNING)
    try:
        return int(args.handler(args))
    except AutopruneError as exc:
        if args.debug:
            raise
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
