from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from autoprune._version import __version__
from autoprune.cli import _dashboard, _export, _profile, _report, _schema, _search, _validate
from autoprune.cli._common import config_parent
from autoprune.errors import AutopruneError, ConfigError

__all__ = ["build_parser", "main"]

# Each command module has register(commands, parent) and sets `handler`; add new commands here.
COMMANDS = (_search, _export, _report, _dashboard, _validate, _profile, _schema)
CLOSED_PIPE = 128 + 13  # the status of a process SIGPIPE ended, as a shell reports it (`autoprune schema | head`)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="autoprune", description="Automatic per-layer structured pruning with Optuna.")
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    # Not required=True: a bare `autoprune` gets the usage and the version (see main), not only an error.
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    parent = config_parent()
    for command in COMMANDS:
        command.register(commands, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The ``autoprune`` command: its exit status. A reader that closes the pipe early (``| head``) ends it
    quietly, as it ends a Unix tool, and without a traceback."""
    try:
        try:
            return _run(argv)
        finally:
            sys.stdout.flush()  # what is still buffered meets the closed pipe here, not at exit
    except BrokenPipeError:
        # Python flushes stdout once more at exit: point it at devnull, or that flush prints its own error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return CLOSED_PIPE


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        names = ", ".join(command.__name__.rsplit("._", 1)[-1] for command in COMMANDS)
        parser.exit(
            2,
            f"{parser.format_usage()}autoprune {__version__}\n"
            f"autoprune: error: a command is required: one of {names}; `autoprune COMMAND --help` for its options\n",
        )
    debug = bool(getattr(args, "debug", False))
    import optuna

    # Our own one-line progress and failure lines replace Optuna's per-trial log (its failure warnings carry
    # a traceback); --debug brings them back.
    optuna.logging.set_verbosity(optuna.logging.DEBUG if debug else optuna.logging.ERROR)
    try:
        return int(args.handler(args))
    except AutopruneError as exc:
        if debug:
            raise
        # Errors found after the config parsed (a weights file, a factory) still name the config file.
        config = getattr(args, "config", None)
        prefix = f"{config}: " if config and isinstance(exc, ConfigError) and exc.source is None else ""
        print(f"autoprune: error: {prefix}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
