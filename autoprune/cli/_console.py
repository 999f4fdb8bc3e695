"""What every long command shows: rich bars on a terminal, plain lines on stderr elsewhere. Imports rich only."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

__all__ = ["TABLE_LABEL", "ConsoleProgress", "FittingProgress", "ProgressLog", "status_column"]

# The fewest characters a shrinking status text keeps before it is dropped altogether, and the fewest it keeps
# before the bar (pure decoration) goes to make room for it.
MIN_STATUS_WIDTH = 12
STATUS_BEFORE_BAR = 48
TABLE_LABEL = "latency table"  # the description of a latency table's bar, in every command that builds one


def status_column(template: str) -> TextColumn:
    """A text column that takes the width left over and ends in an ellipsis rather than push others out."""
    return TextColumn(template, table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis"))


def drop_order(columns: Sequence[ProgressColumn]) -> list[list[ProgressColumn]]:
    """Which columns a narrow terminal loses first: the bar, the elapsed time, field texts, the time left.

    The counts (``n/N``) and the leading label are never dropped: they are what the bar is for.
    """
    bars: list[ProgressColumn] = [c for c in columns if isinstance(c, BarColumn)]
    elapsed: list[ProgressColumn] = [c for c in columns if isinstance(c, TimeElapsedColumn)]
    fields: list[ProgressColumn] = [c for c in columns if isinstance(c, TextColumn) and "task.fields" in c.text_format]
    remaining: list[ProgressColumn] = []
    for i, column in enumerate(columns):
        if isinstance(column, TimeRemainingColumn):
            label = columns[i - 1] if i > 1 else None  # a fixed label just before it ("left"), not the leading one
            if isinstance(label, TextColumn) and "{" not in label.text_format:
                remaining.append(label)
            remaining.append(column)
    return [group for group in (bars, elapsed, fields, remaining) if group]


class FittingProgress(Progress):
    """A rich Progress that drops decoration (see :func:`drop_order`) until a line fits the console width.

    Rich would otherwise squeeze every column, and at 80 columns a long status line pushes out the count.
    """

    def __init__(self, *columns: ProgressColumn, console: Console, **kwargs: Any) -> None:
        # Set first: the parent's constructor may already render.
        self._all_columns = tuple(columns)
        self._drops = drop_order(columns)
        self._width_console = console
        super().__init__(*columns, console=console, expand=True, **kwargs)

    def make_tasks_table(self, tasks: Iterable[Task]) -> Table:
        tasks = list(tasks)
        keep = list(self._all_columns)
        for group in self._drops:
            owed = STATUS_BEFORE_BAR if any(isinstance(c, BarColumn) for c in group) else MIN_STATUS_WIDTH
            if self._width(keep, tasks, owed) <= self._width_console.width:
                break
            keep = [c for c in keep if c not in group]
        self.columns = tuple(keep)
        # Fill the line only for a column that shrinks to fit (the status); otherwise no gaps between columns.
        self.expand = any(c.get_table_column().ratio is not None for c in keep)
        try:
            return super().make_tasks_table(tasks)
        finally:
            self.columns = self._all_columns

    def _width(self, columns: Sequence[ProgressColumn], tasks: Sequence[Task], owed: int) -> int:
        """The line's width with ``columns``, counting a shrinking column at no more than ``owed``."""
        console = self._width_console
        options = console.options
        total = max(len(columns) - 1, 0)  # one space between columns
        for column in columns:
            flexible = column.get_table_column().ratio is not None
            widest = 0
            for task in tasks:
                if isinstance(column, BarColumn):
                    width = column.bar_width or owed
                else:
                    width = Measurement.get(console, options, column(task)).maximum
                widest = max(widest, min(width, owed) if flexible else width)
            total += widest
        return total


class ProgressLog:
    """What a command hands the library as ``log``: a line printed above the bars, and (an
    ``autoprune.study.TableLog``) a latency table built on the way drawn as ``autoprune profile`` draws it."""

    def __init__(self, owner: ConsoleProgress) -> None:
        self._owner = owner

    def __call__(self, message: str, /) -> None:
        self._owner.print_line(message)

    def table_progress(self, done: int, total: int) -> None:
        self._owner.table_progress(done, total)


class ConsoleProgress:
    """Rich progress bars on a terminal; plain lines on stderr elsewhere (CI logs). Subclasses give the columns,
    whose first shows ``{task.description}``: a latency table's bar is a task among the command's own."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.interactive = self.console.is_terminal
        self._progress: Progress | None = None
        self.log = ProgressLog(self)
        self._table: Any = None
        self._table_step = 0

    def columns(self) -> tuple[Any, ...]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        if self.interactive:
            self._progress = FittingProgress(*self.columns(), console=self.console, transient=False)
            self._progress.__enter__()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._progress is not None:
            self._progress.__exit__(exc_type, exc, tb)

    def table_progress(self, done: int, total: int) -> None:
        """A latency table's entries timed: its own bar on a terminal, a line every tenth elsewhere (logs)."""
        if self._progress is not None:
            if self._table is None:
                # The columns' own fields (a search's status, an export's loss), blank on the table's bar.
                texts = [c.text_format for c in self.columns() if isinstance(c, TextColumn)]
                blank: dict[str, Any] = {name: "" for text in texts for name in re.findall(r"task\.fields\[(\w+)\]", text)}
                self._table = self._progress.add_task(TABLE_LABEL, total=total, **blank)
            self._progress.update(self._table, completed=done, total=total)
        elif done * 10 // total > self._table_step or done == total:
            self._table_step = done * 10 // total
            self.print_line(f"{TABLE_LABEL}: {done}/{total} entries timed")

    def print_line(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(message, markup=False, highlight=False)
        else:
            print(message, file=sys.stderr, flush=True)
