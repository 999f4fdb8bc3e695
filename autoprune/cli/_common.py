"""Pieces every command shares: the CONFIG arguments and their overrides, number parsers."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune.config import Config, load_config

__all__ = ["config_parent", "load_with_overrides", "non_negative_int", "positive_float", "positive_int"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}")
    return value


def config_parent() -> argparse.ArgumentParser:
    """``CONFIG [--output DIR] [--storage URL] [--study-name NAME] [--debug]``, shared by every CONFIG command."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("config", help="YAML config file")
    parent.add_argument("--output", metavar="DIR", help="run folder (overrides `output`)")
    parent.add_argument("--storage", metavar="URL", help="Optuna storage URL (overrides `study.storage`)")
    parent.add_argument("--study-name", metavar="NAME", help="study name (overrides `study.name`)")
    parent.add_argument("--debug", action="store_true", help="show tracebacks")
    return parent


def load_with_overrides(args: argparse.Namespace, **extra: Any) -> Config:
    """The config named on the command line, with the shared overrides and ``extra`` dotted keys applied."""
    overrides = {
        "output": args.output,
        "study.storage": args.storage,
        "study.name": args.study_name,
        **extra,
    }
    return load_config(args.config, overrides)
