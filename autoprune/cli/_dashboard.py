"""``autoprune dashboard CONFIG [--port P] [--host H]``: optuna-dashboard on the study's storage."""

from __future__ import annotations

import argparse
from typing import Any

from autoprune.cli._common import load_with_overrides

__all__ = ["register"]


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, found {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port in 0..65535 (0: any free port), found {text!r}")
    return value


def register(commands: Any, parent: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("dashboard", parents=[parent], help="serve optuna-dashboard on the study")
    parser.add_argument("--port", type=_port, default=8080, metavar="P", help="port (default 8080; 0: any free)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H", help="address to bind (default 127.0.0.1)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from autoprune.errors import ConfigError
    from autoprune.report import DashboardServer, open_existing_study

    config = load_with_overrides(args)
    study = open_existing_study(config)  # a clear error when there is nothing to show yet
    try:
        server = DashboardServer(config.storage_url, host=args.host, port=args.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", key="--port") from None
    print(f"optuna-dashboard for study {study.study_name!r}: {server.url}  (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("dashboard stopped", flush=True)
    finally:
        server.stop()
    return 0
