"""Errors a user can cause and fix.

The CLI turns a :class:`UserError`, and an ``OSError`` the file system raised on a named
path (permission denied, a file where a folder is needed), into one line on stderr and exit
code 2; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


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
