"""``worldboot serve --export``: the votes as CSV, made from the study's YAML and the database.

The export opens no image: each vote's subset and action come from the YAML (or its
manifest), so an output moved or a model folder gone since the votes were cast loses nothing.
The CSV never replaces a file the study reads, nor an existing file that is not an earlier
export (its first line is the export's header): a re-export refreshes its own file only.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from worldboot.data.schema import Problems, resolve_under
from worldboot.errors import UsageError
from worldboot.run_guards import refuse_overwriting
from worldboot.study.outputs import model_specs
from worldboot.study.spec import item_entries, read_study_yaml, study_root
from worldboot.study.votes import CSV_COLUMNS, VoteStore


@dataclass
class StudyIndex:
    """What a study's YAML (and its manifest) say, read without opening an image.

    Attributes:
        name: The study's name (its votes database holds it).
        labels: Item id -> (subset, action) of every item named (the first entry of an id).
        inputs: Each file the study reads -> what it is, for the message of a refused output.
    """

    name: str
    labels: dict[str, tuple[str, str]]
    inputs: dict[Path, str]


def index_study(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> StudyIndex:
    """Read a study's items and the files it names; no image is opened, and a missing model
    folder or output is no error.

    Raises:
        ConfigError: For the YAML's mistakes :func:`~worldboot.study.spec.load_study` refuses.
        DataError: For a missing YAML or manifest, or a path leaving the study's root.
    """
    file = Path(path)
    data = read_study_yaml(file)
    base = study_root(file, data, root)
    specs = model_specs(data.get("models"), base, file, check_folders=False)
    inputs = {file: f"the study file {file}"}
    if "manifest" in data:
        inputs[resolve_under(base, data["manifest"])] = f"the study's manifest {data['manifest']}"
    labels: dict[str, tuple[str, str]] = {}
    for entry in item_entries(data, base, file, Problems()):
        labels.setdefault(entry.id, (entry.subset, entry.action))
        inputs.setdefault(entry.source, f"the source image of item {entry.id!r}")
        for name, spec in specs.items():
            output = spec.declared(entry.id)
            if output is not None:
                inputs.setdefault(output, f"the output of model {name!r} on item {entry.id!r}")
    return StudyIndex(data.get("name") or file.stem, labels, inputs)


def is_export(path: Path) -> bool:
    """Whether ``path`` is a CSV file whose first line is the export's header."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            first = f.readline(4096)
    except (OSError, UnicodeDecodeError):
        return False
    return next(csv.reader([first]), None) == list(CSV_COLUMNS)


def check_export_target(target: str, inputs: dict[Path, str]) -> None:
    """Refuse an export that would replace a file the study reads (``inputs``), a folder, or
    an existing file that is not an earlier export.

    Raises:
        UsageError: Naming ``--export``'s file and why.
    """
    if not target.strip():  # an unset variable: not "serve instead"
        raise UsageError("--export is empty: name the CSV file to write")
    refuse_overwriting(inputs, export=target)
    path = Path(target)
    if path.is_dir():
        raise UsageError(f"--export {target} is a folder: name the CSV file to write")
    if (path.exists() or path.is_symlink()) and not is_export(path):
        raise UsageError(
            f"--export {target} exists and is not an earlier export of votes: "
            "name a new file (or move that one away first)"
        )


def export_votes(study_path: str, db_path: Path, target: str) -> int:
    """Write the votes of a study in ``db_path`` to the CSV file ``target``.

    Returns:
        The number of votes written.

    Raises:
        UsageError: For a refused ``target`` (see :func:`check_export_target`).
        DataError: For a missing database, or one that is not this study's votes database.
    """
    index = index_study(study_path)
    check_export_target(target, {**index.inputs, db_path: f"the votes database {db_path}"})
    store = VoteStore(db_path, index.name, create=False)
    return store.export_csv(target, index.labels)
