"""Guards of a stage's output folder, checked before anything is written into it.

* :func:`out_folder`: an empty ``--out`` (an unset shell variable) is refused, not taken as the
  current folder.
* :func:`held_stage` and the check in :class:`~worldboot.runs.RunDir`: a folder that holds
  another stage's run is refused, not overwritten.
* :func:`refuse_foreign_files`: a folder that holds files but no worldboot run (a user's own
  folder, a cache, a model) is refused: a stage's ``config.yaml``, ``summary.json`` or outputs
  would replace the user's files of those names.
* :func:`refuse_other_settings`: rows made with other settings are never resumed under new ones.
* :func:`refuse_overwriting`: an output file that names one of the command's inputs (or another
  output) is refused before anything is read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from worldboot.config import read_yaml, to_dict
from worldboot.errors import ConfigError, UsageError


def claim_folder(path: str | os.PathLike[str], stage: str) -> Path:
    """Every check of a stage's output folder, for a stage that writes into it before its
    :class:`~worldboot.runs.RunDir` is made (which is then made with ``claimed=True``):
    :func:`out_folder`, :func:`refuse_another_stage` and :func:`refuse_foreign_files`.

    Raises:
        UsageError: The first check that fails, or ``path`` is a file.
    """
    out = out_folder(path, stage)
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out} is a file: give {stage} a folder (--out)")
    refuse_another_stage(out, stage)
    refuse_foreign_files(out, stage)
    return out


def out_folder(path: str | os.PathLike[str], stage: str) -> Path:
    """``path`` as a stage's output folder, refused when empty: ``--out "$RUN"`` with ``RUN``
    unset would otherwise write into, and over the files of, the current folder.

    Raises:
        UsageError: Saying that the folder is empty.
    """
    if not str(path).strip():
        raise UsageError(f"the output folder of {stage} is empty: name a folder (--out DIR)")
    return Path(path)


def refuse_other_settings(out: Path, cfg: Any, keys: Sequence[str], what: str) -> None:
    """Refuse to add to the outputs in ``out`` when its ``config.yaml`` (the run that made them)
    differs from ``cfg`` in one of ``keys`` (dotted paths into nested sections work): rows made
    with other settings would be mixed with the new ones, or silently kept in their place.

    Args:
        out: The run folder, known to hold outputs.
        cfg: The new run's config dataclass.
        keys: The top-level keys whose values change what a row holds.
        what: What the folder holds, for the message (``"predictions"``).

    Raises:
        ConfigError: Naming the first key that differs, and both values.
    """
    old_file = out / "config.yaml"
    if not old_file.is_file():
        return
    old, new = read_yaml(old_file), to_dict(cfg)

    def flat(tree: Any, prefix: str) -> dict[str, Any]:
        if not isinstance(tree, dict):
            return {prefix: tree}
        leaves: dict[str, Any] = {}
        for k, v in tree.items():
            leaves.update(flat(v, f"{prefix}.{k}"))
        return leaves

    for key in keys:
        a, b = flat(old.get(key), key), flat(new.get(key), key)
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                raise ConfigError(
                    f"{out} holds {what} made with {k}={a.get(k)!r}, not {b.get(k)!r}: "
                    "use another --out (or delete the folder) to start afresh"
                )


def run_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta.json`` of the run in the folder ``path``; empty when there is none, or it is
    not one of ours (not a JSON object)."""
    try:
        meta = json.loads((Path(path) / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no run here
        return {}
    return meta if isinstance(meta, dict) else {}


def held_stage(path: str | os.PathLike[str]) -> str | None:
    """The stage whose run the folder ``path`` holds (its ``meta.json``), or None."""
    held = run_meta(path).get("stage")
    return held if isinstance(held, str) else None


def refuse_another_stage(path: Path, stage: str) -> None:
    """Refuse a folder that holds another stage's run: its config, meta and problems would be
    replaced, and a stage that clears its outputs could remove the other's.

    Raises:
        UsageError: Naming the folder and the stage it holds.
    """
    held = held_stage(path)
    if held is not None and held != stage:
        raise UsageError(f"{path} holds a run of {held} (its meta.json): give {stage} a folder of its own")


def foreign_entries(path: Path) -> list[str]:
    """The names in the folder ``path`` when it holds files but no worldboot run (no
    ``meta.json`` naming a stage); empty when it is absent, empty, or holds a run. Hidden
    entries (``.DS_Store``, a writer's temporary files) do not count."""
    if not path.is_dir() or held_stage(path) is not None:
        return []
    try:
        return sorted(e.name for e in os.scandir(path) if not e.name.startswith("."))
    except OSError:  # unreadable: the stage's own write will say why
        return []


def refuse_foreign_files(path: Path, stage: str) -> None:
    """Refuse a folder that holds files but no worldboot run: the stage would write its
    ``config.yaml``, ``meta.json`` and outputs over files of those names, and a stage that
    starts over clears its outputs.

    Raises:
        UsageError: Naming the folder and the first of its files.
    """
    names = foreign_entries(path)
    if names:
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        raise UsageError(
            f"{path} holds files that no worldboot run wrote ({names[0]!r}{more}): "
            f"give {stage} an empty or new folder (--out)"
        )


def refuse_overwriting(inputs: Mapping[str | os.PathLike[str], str], **outputs: str | None) -> None:
    """Refuse output files (by option name) that name one of the inputs or each other, before
    anything is read: the last one written would replace the other (``--out x.jsonl`` on
    ``x.jsonl`` would lose its bad lines for good). Paths are compared after resolving links.

    Args:
        inputs: Each file the command reads -> what it is, for the message (``"the data file x"``).
        **outputs: Option name (``out`` for ``--out``) -> the file it names, or None when not given.

    Raises:
        UsageError: Naming the option, its file and the input (or option) it would overwrite.
    """
    seen = {os.path.realpath(path): what for path, what in inputs.items()}
    for flag, out in outputs.items():
        if out is None:
            continue
        real = os.path.realpath(out)
        if real in seen:
            raise UsageError(f"--{flag} {out} would overwrite {seen[real]}: write it to another file")
        seen[real] = f"--{flag} {out}"
