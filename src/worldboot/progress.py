"""The progress bar of every long job and the console every command prints to: rich, one
look across worldboot.

``WORLDBOOT_NO_PROGRESS=1`` turns every bar off (tests, batch jobs, logs that go to files).
:func:`quiet_libraries` keeps the libraries' own bars, logs and warnings off that console (the
``worldboot`` command and every ``benchmarks/bench_*.py`` call it unless ``--verbose``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
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


#: The ``--verbose`` option's help, the same for the ``worldboot`` command and the benchmarks.
VERBOSE_HELP = "show the libraries' logs, warnings and progress bars too"


def _deepspeed_errors_only(record: logging.LogRecord) -> bool:
    return record.levelno >= logging.ERROR


#: Whether :func:`quiet_libraries` ran in this process (libraries that configure their logs when
#: they start, such as Ray, read it then).
_QUIET = False


def libraries_quiet() -> bool:
    """True once :func:`quiet_libraries` ran: the console keeps to worldboot's own output."""
    return _QUIET


def quiet_libraries() -> None:
    """Keep the console to worldboot's own progress bars and results: no transformers /
    huggingface_hub progress bars or info logs, no DeepSpeed warnings, no library
    ``FutureWarning``/``UserWarning``/``DeprecationWarning`` (``--verbose`` skips this call and
    keeps them). Environment variables set by the user win.

    Call it before importing the libraries where possible: DeepSpeed logs "Setting accelerator
    to CPU" when it is imported. The environment variables reach child processes too.
    """
    global _QUIET
    _QUIET = True
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", "ERROR")  # Ray Data sets its logger up from it
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    if "transformers" in sys.modules:  # imported already (e.g. in a test): switch it off directly
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    # DeepSpeed's logger ("DeepSpeed", its own handler, no propagation) warns on import
    # ("Setting accelerator to CPU"); a filter set now stays when DeepSpeed configures it: errors only.
    ds_logger = logging.getLogger("DeepSpeed")
    if _deepspeed_errors_only not in ds_logger.filters:
        ds_logger.addFilter(_deepspeed_errors_only)
    libraries = r"(transformers|peft|accelerate|torch|huggingface_hub|safetensors|deepspeed)(\.|$)"
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=libraries)
    # PIL warns of an image over 89 Mpx (and still reads it); too big an image fails on its own.
    warnings.filterwarnings("ignore", message=r"Image size \(\d+ pixels\) exceeds limit", module=r"PIL(\.|$)")
