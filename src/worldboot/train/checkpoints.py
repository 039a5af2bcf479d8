"""A training run's checkpoints: where they live, what each records, and which a resume may use.

A checkpoint is ``<out>/checkpoints/step-NNNNNNN/``: accelerate's ``save_state`` (adapter or
model, optimiser, scheduler, RNG states) and, written last, :data:`STATE_FILE` (the global
step, the task, the base model and the data fingerprint). A folder without the state file is a
killed save and is never resumed from. The recipe (:mod:`worldboot.train.recipes`) calls these
around accelerate's own ``save_state`` / ``load_state``.
"""

from __future__ import annotations

import json
import shutil
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
    recorded = read_json(path / STATE_FILE).get("data", data_fp)  # older checkpoints: none recorded
    if recorded != data_fp:
        # The step counter is the data position: other data under it would train on batches
        # the first run never planned, silently.
        raise ConfigError(
            f"checkpoint {path} was trained on other data than this run's (the caches, their caps or "
            "held-out split, the seed, the batch size or the preference pairs changed): resume with the "
            "same data, or give another --out to start over"
        )


def read_state(path: Path, task: str) -> dict[str, Any]:
    """The state file of checkpoint ``path``, checked to be finished and of ``task``.

    Raises:
        ModelError: Not a finished checkpoint, or one of another task.
    """
    if not (path / STATE_FILE).is_file():
        raise ModelError(f"not a finished checkpoint: {path}")
    state = read_json(path / STATE_FILE)
    if state.get("task") != task:
        raise ModelError(f"checkpoint {path} is a {state.get('task')} run, not {task}")
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
