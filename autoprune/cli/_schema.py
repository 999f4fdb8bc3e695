"""``autoprune schema [--markdown]``: the config's JSON Schema (for YAML editors), or its Markdown reference."""

from __future__ import annotations

import argparse
import json
from typing import Any

from autoprune.config import config_json_schema, config_reference_markdown

__all__ = ["register"]


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser(
        "schema",
        help="print the config's JSON Schema (YAML editors complete and check configs with it)",
        description="Print the config's JSON Schema; save it and point a YAML file at it with the modeline "
        "'# yaml-language-server: $schema=autoprune.schema.json'.",
    )
    parser.add_argument("--markdown", action="store_true", help="print the reference of every key (docs/config.md) instead")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.markdown:
        print(config_reference_markdown(), end="")
    else:
        print(json.dumps(config_json_schema(), indent=2))
    return 0
