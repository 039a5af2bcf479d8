"""Ranges of config fields: :func:`bounded` declares one on a dataclass field, and
:func:`check_ranges` checks every field of a config against its own (every command that loads a
config runs it, through :func:`worldboot.config.from_dict`). Light: the CLI's argument types
use :func:`shown_number` and :data:`SEED_MAX` before any heavy import.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from worldboot.errors import ConfigError


def bounded(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None) -> Any:
    """A dataclass field with a range, checked by :func:`check_ranges` (so by every command
    that loads the config): ``lr: float = bounded(2e-4, gt=0)``."""
    return dataclasses.field(default=default, metadata={"ge": ge, "gt": gt, "le": le})


#: The largest seed every random generator here takes (numpy's ``default_rng`` and
#: ``RandomState``, torch's ``manual_seed`` on every device): a 32-bit unsigned integer.
SEED_MAX = 2**32 - 1


def seed_field(default: int = 0) -> Any:
    """A config's ``seed`` field: an integer from 0 to :data:`SEED_MAX`."""
    return bounded(default, ge=0, le=SEED_MAX)


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Check every field of a config dataclass (and the dataclasses in it): numbers within the
    bounds of :func:`bounded`, and floats finite (YAML's ``.nan`` and ``.inf`` parse as floats).

    Raises:
        ConfigError: Naming the first key out of range and what it must be.
    """
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        if isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item):
                    check_ranges(item, f"{key}[{i}].")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value}")
        ge, gt, le = (f.metadata.get(k) for k in ("ge", "gt", "le"))
        if ge is not None and value < ge:
            raise ConfigError(f"{key} must be at least {shown_number(ge)}, got {shown_number(value)}")
        if gt is not None and value <= gt:
            raise ConfigError(f"{key} must be greater than {shown_number(gt)}, got {shown_number(value)}")
        if le is not None and value > le:
            raise ConfigError(f"{key} must be at most {shown_number(le)}, got {shown_number(value)}")


def shown_number(value: float) -> str:
    """A bound or value as a user wrote it: an integer in full (a seed's 4294967295), else ``%g``."""
    return str(value) if isinstance(value, int) else f"{value:g}"
