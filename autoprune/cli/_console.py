"""What every long command shows: rich bars on a terminal, plain lines on stderr elsewhere. Imports rich only."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import Progress

__all__ = ["ConsoleProgress"]


class ConsoleProgress:
    """Rich progress bars on a terminal; plain lines on stderr elsewhere (CI logs). Subclasses give the columns."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self._progress: Progress | None = None

    def columns(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        if self.interactive:
            self._progress = Progress(*self.columns(), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def log(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)
