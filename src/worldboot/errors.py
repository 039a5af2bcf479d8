"""Errors a user can cause and fix.

The CLI turns a :class:`UserError`, and an ``OSError`` the file system raised on a named
path (permission denied, a file where a folder is needed), into one line on stderr and exit
code 2; any other exception is a bug and keeps its traceback. :func:`resolve_path` resolves a
path the user gave with a symbolic link loop reported as such an ``OSError``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (file, config, argument): reported in one line, exit 2."""


class ConfigError(UserError):
    """A config key or value that does not fit the config's dataclass."""


class DataError(UserError):
    """A data file that cannot be read or does not follow its format."""


class ModelError(UserError):
    """A model directory that is missing files or does not fit what is asked of it."""


class UsageError(UserError):
    """Command-line arguments that contradict each other or the file system."""


def symlink_loop(path: str | os.PathLike[str]) -> OSError:
    """The ``OSError`` (``ELOOP``) the file system raises for a symbolic link loop at ``path``."""
    return OSError(errno.ELOOP, os.strerror(errno.ELOOP), str(path))


def resolve_path(path: str | os.PathLike[str]) -> Path:
    """``Path(path).resolve()`` for a path a user gave (it need not exist).

    Raises:
        OSError: ``ELOOP`` naming ``path`` when it, or a folder on it, is a symbolic link loop
            (``ln -s a b; ln -s b a``), which the CLI prints in one line. Python 3.10-3.12's
            ``resolve`` raises a ``RuntimeError`` there instead, and 3.13's returns the loop.
    """
    try:
        resolved = Path(path).resolve()
        os.stat(resolved)
    except RuntimeError:  # "Symlink loop from ..." (Python before 3.13)
        raise symlink_loop(path) from None
    except OSError as err:  # a missing path is fine; only a loop is refused
        if err.errno == errno.ELOOP:
            raise symlink_loop(path) from None
    return resolved


def unless_loop(path: str | os.PathLike[str], err: Exception) -> Exception:
    """``err`` (a "not found" error) for a path that is not there; the ``ELOOP`` OSError naming
    ``path`` when it is a symbolic link loop, and an error of ``err``'s class saying what it is
    when it is a named pipe or a device: ``is_file`` and ``is_dir`` answer False for both."""
    try:
        resolve_path(path)
    except OSError as loop:
        return loop
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        try:
            return type(err)(f"{path} is neither a file nor a folder (a named pipe or a device)")
        except TypeError:  # an error class that takes other arguments
            return err
    return err
