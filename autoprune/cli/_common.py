"""Pieces every command shares: the CONFIG arguments and their overrides, number parsers."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from autoprune.config import Config, load_config

__all__ = [
    "add_device_flag",
    "config_parent",
    "device_list",
    "load_with_overrides",
    "non_negative_int",
    "number",
    "positive_float",
    "positive_int",
    "trial_number",
]


def _parse(text: str, convert: Callable[[str], Any], ok: Callable[[Any], bool], expected: str) -> Any:
    """``convert(text)`` if it gives a value ``ok`` accepts; else an argparse error naming what was expected."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}") from None
    if not ok(value):
        raise argparse.ArgumentTypeError(f"expected {expected}, found {text!r}")
    return value


def positive_int(text: str) -> int:
    return _parse(text, int, lambda v: v > 0, "a positive integer")


def non_negative_int(text: str) -> int:
    return _parse(text, int, lambda v: v >= 0, "an integer >= 0")


def trial_number(text: str) -> int:
    return _parse(text, int, lambda v: v >= 0, "a trial number (an integer >= 0)")


def positive_float(text: str) -> float:
    return _parse(text, float, lambda v: v > 0, "a positive number")


def number(text: str) -> float:
    return _parse(text, float, lambda v: True, "a number")


def device_list(text: str) -> list[int]:
    """``0,1`` -> ``[0, 1]``: CUDA device indices for ``--devices``."""
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() for p in parts):
        raise argparse.ArgumentTypeError(f"expected CUDA device indices such as 0,1, found {text!r}")
    return [int(p) for p in parts]


def add_device_flag(parser: argparse.ArgumentParser) -> None:
    """``--device``, for every command that runs a model (overrides ``runtime.device``)."""
    parser.add_argument(
        "--device", metavar="DEV", help="auto, cpu, cuda, cuda:N or mps (overrides `runtime.device`)"
    )


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
