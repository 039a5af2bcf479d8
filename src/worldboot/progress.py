"""The progress bar of every long job: rich, on stderr, one look across worldboot.

``WORLDBOOT_NO_PROGRESS=1`` turns every bar off (tests, batch jobs, logs that go to files).
"""

from __future__ import annotations

import os
from typing import Any


def progress_enabled(requested: bool = True) -> bool:
    """Whether to draw a bar: asked for, and not switched off by ``WORLDBOOT_NO_PROGRESS``."""
    return requested and not os.environ.get("WORLDBOOT_NO_PROGRESS")


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
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns: list[Any] = [TextColumn(label if label is not None else "{task.description}"), BarColumn()]
    columns.append(MofNCompleteColumn())
    if info:
        columns.append(TextColumn("{task.fields[info]}"))
    columns.append(TimeRemainingColumn())
    return Progress(
        *columns, console=Console(stderr=True), disable=not progress_enabled(enabled), transient=transient
    )
