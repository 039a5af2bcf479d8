"""The progress bar of every long job and the console every command prints to: rich, one
look across worldboot.

``WORLDBOOT_NO_PROGRESS=1`` turns every bar off (tests, batch jobs, logs that go to files).
"""

from __future__ import annotations

import os
from typing import Any


def progress_enabled(requested: bool = True) -> bool:
    """Whether to draw a bar: asked for, and not switched off by ``WORLDBOOT_NO_PROGRESS``."""
    return requested and not os.environ.get("WORLDBOOT_NO_PROGRESS")


def console(stderr: bool = False, **kwargs: Any) -> Any:
    """A ``rich.console.Console`` for a command's output. Emoji codes are off: rich would show
    ``file.json:100: ...`` (a problem on line 100) as ``file.json💯 ...``.

    Args:
        stderr: Print to standard error (messages beside a command's real output).
        **kwargs: Any other ``Console`` argument (``soft_wrap=True`` for long paths).
    """
    from rich.console import Console

    return Console(stderr=stderr, emoji=False, **kwargs)


def progress_bar(label: str | None = None, enabled: bool = True, info: bool = False, transient: bool = False) -> Any:
    """A ``rich.progress.Progress``: label, bar, done/total, optional info text, time left.

    Args:
        label: Fixed text before the bar (rich markup allowed); ``None`` shows each task's
            description instead.
        enabled: Draw it (:func:`progress_enabled` decides with the environment switch).
        info: Add a column showing the task field ``info`` (pass ``info=""`` to
            ``add_task`` and update it with metrics).
        transient: Remove the bar when done.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn(label if label is not None else "{task.description}"), BarColumn()]
    columns.append(MofNCompleteColumn())
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeRemainingColumn())
    return Progress(
        *columns, console=console(stderr=True), disable=not progress_enabled(enabled), transient=transient
    )
