"""A training run's checkpoints: where they live, what each records, and which a resume may use.

A checkpoint is ``<out>/checkpoints/step-NNNNNNN/``: accelerate's ``save_state`` (adapter or
model, optimiser, scheduler, RNG states) and, written last, :data:`STATE_FILE` (the global
step, the task, the base model and the data fingerprint). A folder without the state file is a
killed save and is never resumed from. The recipe (:mod:`worldboot.train.recipes`) calls these
around accelerate's own ``save_state`` / ``load_state``; :func:`check_intact` refuses a
checkpoint whose files were cut short (a full disk, a partial copy) before the model loads, in
one line naming the file (accelerate would fail on it deep in ``load_state``, or, for a random
state, silently skip it and the resume would not be exact).
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

from worldboot.errors import ConfigError, ModelError
from worldboot.models.files import read_json
from worldboot.runs import read_jsonl, write_atomic
from worldboot.train.config import CHECKPOINTS_DIR, SNAPSHOTS_DIR, STATE_FILE


def checkpoint_dir(out: Path, step: int) -> Path:
    """The folder of the checkpoint taken after global step ``step``."""
    return out / CHECKPOINTS_DIR / f"step-{step:07d}"


def snapshot_dir(out: Path, step: int) -> Path:
    """The folder of the model snapshot taken after global step ``step`` (``snapshot_steps``)."""
    return out / SNAPSHOTS_DIR / f"step-{step:07d}"


def finished_checkpoints(out: Path) -> list[Path]:
    """The checkpoints of the run in ``out`` whose state file was written, oldest first."""
    return sorted(c for c in (out / CHECKPOINTS_DIR).glob("step-*") if (c / STATE_FILE).is_file())


def resume_path(out: Path, resume: bool | str) -> Path | None:
    """The checkpoint a resume starts from: the given folder, else the newest finished one."""
    if isinstance(resume, str):
        return Path(resume)
    done = finished_checkpoints(out)
    return done[-1] if done else None


def check_resume_data(path: Path | None, data_fp: str) -> None:
    """Refuse a resume from ``path`` if it was trained on other data than ``data_fp``.

    Cheap (one small file), so a recipe calls it before its model loads. A missing checkpoint
    or state file is left to :func:`read_state`, which says so.

    Raises:
        ConfigError: The checkpoint records another data fingerprint.
    """
    if path is None or not (path / STATE_FILE).is_file():
        return
    recorded = _state(path).get("data", data_fp)  # older checkpoints: none recorded
    if recorded != data_fp:
        # The step counter is the data position: other data under it would train on batches
        # the first run never planned, silently.
        raise ConfigError(
            f"checkpoint {path} was trained on other data than this run's (the caches, their caps or "
            "held-out split, the seed, the batch size or the preference pairs changed): resume with the "
            "same data, or give another --out to start over"
        )


def first_sentence(err: BaseException) -> str:
    """``err``'s message up to its first full stop (torch's run on for three sentences)."""
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return f"{type(err).__name__}: {text.split('. ')[0].rstrip('.')}"


def _archive_problem(file: Path) -> str:
    """Why torch could not open the zip archive ``file`` (its index is at the end: a file cut
    short has none), or ""."""
    try:  # the standard library reads the index (torch.save writes a plain zip); nothing unpickled
        with zipfile.ZipFile(file):
            return ""
    except (OSError, zipfile.BadZipFile) as err:
        return first_sentence(err)


def file_problem(file: Path, strict: bool = False) -> str:
    """Why checkpoint file ``file`` is damaged or incomplete, or "" (by its structure only: an
    empty file, a torch archive without its index, a safetensors file shorter than its header
    says, JSON that does not parse).

    Args:
        file: A file of a checkpoint.
        strict: Also call a torch file that is not a zip archive damaged (``torch.save`` writes
            archives; a pickle there is no file of this run). Off before loading, where
            torch's own loader says what it is.
    """
    suffix = file.suffix
    if suffix not in (".bin", ".pkl", ".pt", ".pth", ".safetensors", ".json"):
        return ""
    if file.stat().st_size == 0:
        return "an empty file"
    if suffix == ".json":
        try:
            json.loads(file.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            return f"not valid JSON ({first_sentence(err)})"
        return ""
    if suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(file), "pt"):
                return ""
        except SafetensorError as err:
            return first_sentence(err)
    with open(file, "rb") as fh:
        zipped = fh.read(4) == b"PK\x03\x04"
    if zipped:
        return _archive_problem(file)
    return "not a torch archive (torch.save writes one)" if strict else ""


def damaged(path: Path, detail: str, file: Path | None = None) -> ModelError:
    """The one line for checkpoint ``path`` that cannot be loaded: ``detail``, the file (when
    known), and how to go on (delete it; a resume takes the finished one before it)."""
    earlier = sorted(c for c in path.parent.glob("step-*") if (c / STATE_FILE).is_file() and c.name < path.name)
    what = "a file in it"
    if file is not None:
        what = f"its file {file.relative_to(path) if file.is_relative_to(path) else file}"
    go_on = (f"rerun with --resume {earlier[-1]} (the checkpoint before it)" if earlier else
             "rerun with --resume to start again from step 0 (no earlier checkpoint is kept)")
    return ModelError(f"checkpoint {path} cannot be loaded ({detail}): {what} is damaged or incomplete (a save cut "
                      f"short, or a partial copy); delete {path} and {go_on}")


def load_failure(path: Path, err: Exception) -> ModelError:
    """The line for checkpoint ``path`` that accelerate failed to load with ``err``: damaged,
    naming the file, when a file of it is (:func:`file_problem`, strict); else saved under
    another config (never "delete it": nothing says it is broken)."""
    detail = first_sentence(err)
    found = find_damaged(path, strict=True)
    if found is not None:
        return damaged(path, detail, found[0])
    return ModelError(f"checkpoint {path} cannot be loaded ({detail}): resume with the config it was trained "
                      "with, or give another --out to start over")


def find_damaged(path: Path, strict: bool = False) -> tuple[Path, str] | None:
    """The first damaged file of checkpoint ``path`` and what is wrong with it (:func:`file_problem`)."""
    for file in sorted(f for f in path.rglob("*") if f.is_file()):
        problem = file_problem(file, strict)
        if problem:
            return file, problem
    return None


def check_intact(path: Path | None) -> None:
    """Refuse checkpoint ``path`` if a file of it is damaged or incomplete (cheap: headers and
    archive indexes only, so a recipe calls it before its model loads). A missing checkpoint
    is left to :func:`read_state`, which says so.

    Raises:
        ModelError: One line naming the file, what is wrong and how to go on.
    """
    if path is None or not path.is_dir():
        return
    found = find_damaged(path)
    if found is not None:
        file, problem = found
        raise damaged(path, problem, file)


def read_state(path: Path, task: str) -> dict[str, Any]:
    """The state file of checkpoint ``path``, checked to be finished and of ``task``.

    Raises:
        ModelError: Not a finished checkpoint, or one of another task.
    """
    if not (path / STATE_FILE).is_file():
        raise ModelError(f"not a finished checkpoint: {path}")
    state = _state(path)
    if state.get("task") != task:
        raise ModelError(f"checkpoint {path} is a {state.get('task')} run, not {task}")
    return state


def _state(path: Path) -> dict[str, Any]:
    """The state file of checkpoint ``path``, refused in one line when it is not an object with
    a whole ``global_step`` (edited by hand, or another tool's file of that name).

    Raises:
        ModelError: Naming the file and what is wrong.
    """
    file = path / STATE_FILE
    state = read_json(file)
    step = state.get("global_step") if isinstance(state, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        what = f"global_step {json.dumps(step)}" if isinstance(state, dict) else f"a JSON {type(state).__name__}"
        raise ModelError(f"{file} is not a worldboot checkpoint's state ({what}): resume from another "
                         "checkpoint, or give another --out to start over")
    return state


def write_state(path: Path, global_step: int, task: str, base_model: str, data_fp: str) -> None:
    """Mark checkpoint ``path`` finished (call after everything else in it is written)."""
    state = {"global_step": global_step, "task": task, "base_model": base_model, "data": data_fp}
    write_atomic(path / STATE_FILE, json.dumps(state))


def prune(out: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` (at least one) finished checkpoints."""
    for old in finished_checkpoints(out)[: -max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)


def drop_metrics_after(metrics_path: Path, step: int) -> None:
    """Remove the metrics a killed run logged after its last checkpoint (they are redone)."""
    if not metrics_path.is_file():
        return
    kept = [r for _, r in read_jsonl(metrics_path) if r.get("step", 0) <= step and "final" not in r]
    write_atomic(metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
