"""Run directories and the files stages write into them, with one behaviour each.

* :class:`RunDir`: a stage's ``config.yaml``, ``meta.json`` and ``log.txt``.
* :func:`atomic_path` / :func:`write_atomic`: a file is whole or absent, never half-written
  (a temporary file in the same folder, then a rename).
* :func:`read_jsonl`, :func:`append_jsonl`, :func:`repair_tail`, :func:`done_ids`: JSONL rows
  that survive a kill. A killed run leaves at most a partial last line; ``repair_tail`` cuts
  the file back to its last complete, parseable line, and a resumed run skips the ids already
  written.
* :func:`shard_of`, :func:`shard_items`, :func:`distributed_shard`: which items a process of a
  multi-process run owns. Items go to shards by a stable hash of their id, so a resumed run
  (or one with another ordering of its input) gives every item to the same shard.
* :func:`file_lock`: :mod:`filelock` (portable; ``fcntl`` does not exist on Windows).

The checks of an output folder before a stage writes into it are in :mod:`worldboot.run_guards`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from filelock import FileLock

from worldboot.config import dump_yaml, read_yaml
from worldboot.errors import ConfigError, UsageError, resolve_path
from worldboot.run_guards import out_folder, refuse_another_stage, refuse_foreign_files

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------


def make_folder(path: Path) -> None:
    """Create the output folder ``path`` (and its parents), or say in one line why not."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        resolve_path(path)  # a symbolic link loop, not a file: an OSError (ELOOP) naming it
        raise UsageError(f"cannot create the folder {path}: it, or a folder above it, is a file") from None


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on an error it
    is removed. The temporary name keeps ``path``'s suffix, so that writers that choose a
    format by suffix (PIL, matplotlib) still can.

    Example:
        >>> with atomic_path("out/figure.png") as tmp:  # doctest: +SKIP
        ...     image.save(tmp)
    """
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder: name a file to write")
    make_folder(path.parent)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.filename is None or Path(err.filename) != tmp:
            raise
        # The user named ``path``: the hidden temporary name would only puzzle them.
        raise OSError(err.errno, err.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        if isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            tmp.write_text(data, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# Run directories
# --------------------------------------------------------------------------------------------

#: Packages whose versions every run records in ``meta.json``.
TRACKED_PACKAGES = (
    "worldboot",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "safetensors",
    "numpy",
    "opencv-python-headless",
    "deepspeed",
    "openai",
)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def git_sha() -> str | None:
    """The worldboot checkout's commit, or None outside a git checkout."""
    import subprocess

    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``names`` (None where a package is absent)."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


class RunDir:
    """A stage's output directory: ``config.yaml``, ``meta.json`` and ``log.txt`` beside the outputs.

    Use as a context manager; ``meta.json`` gets the end time and status on exit.

    Args:
        path: The directory (created if absent).
        cfg: The resolved config dataclass, written to ``config.yaml``.
        stage: The stage's name, recorded in ``meta.json``.
        writer: False in every process of a multi-process run but the main one, which alone
            writes the three files (the directory is shared).
        claimed: The stage checked the folder with :func:`~worldboot.run_guards.claim_folder`
            before writing into it, so its own files are there now: the check of files no run
            wrote is not made again.

    Raises:
        UsageError: ``path`` is empty, holds another stage's run, or holds files no worldboot
            run wrote (:mod:`worldboot.run_guards`).
    """

    def __init__(
        self, path: str | os.PathLike[str], cfg: Any, stage: str, writer: bool = True, claimed: bool = False
    ) -> None:
        self.path = out_folder(path, stage)
        refuse_another_stage(self.path, stage)
        if writer and not claimed:  # the other processes of a run find the writer's files there
            refuse_foreign_files(self.path, stage)
        make_folder(self.path)
        self.cfg = cfg
        self.writer = writer
        self.meta: dict[str, Any] = {
            "stage": stage,
            "git_sha": git_sha(),
            "versions": package_versions(),
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "argv": sys.argv,
            "start_time": _now(),
            "end_time": None,
            "status": "running",
        }

    def __enter__(self) -> RunDir:
        if not self.writer:
            return self
        self._write_meta()  # first: a run killed between the two is still found as a run
        write_atomic(self.path / "config.yaml", dump_yaml(self.cfg))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.writer:
            return
        self.meta["end_time"] = _now()
        self.meta["status"] = "ok" if exc_type is None else f"failed: {exc_type.__name__}"
        self._write_meta()

    def _write_meta(self) -> None:
        write_atomic(self.path / "meta.json", json.dumps(self.meta, indent=2))

    def record(self, key: str, value: Any, comment: list[str] | None = None) -> None:
        """Add ``key`` to ``meta.json`` and, given ``comment`` lines, append them to
        ``config.yaml`` as YAML comments (the file still loads as the config it was)."""
        if not self.writer:
            return
        self.meta[key] = value
        self._write_meta()
        if comment:
            text = (self.path / "config.yaml").read_text(encoding="utf-8")
            write_atomic(self.path / "config.yaml", text + "".join(f"# {line}\n" for line in comment))

    def log(self, message: str) -> None:
        """Append a time-stamped line to ``log.txt``."""
        if not self.writer:
            return
        with open(self.path / "log.txt", "a", encoding="utf-8") as fh:
            fh.write(f"{_now()} {message}\n")


# --------------------------------------------------------------------------------------------
# JSONL rows that survive a kill
# --------------------------------------------------------------------------------------------


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, row)`` for every line of ``path`` that holds a JSON object.

    Lenient, for files a stage wrote itself (a run's outputs): a line that does not parse (a
    partial last line of a killed run, bytes that are not UTF-8) is skipped. A user's input
    files go through :func:`worldboot.data.schema.iter_jsonl`, which reports such lines. A
    missing file has no rows.
    """
    path = Path(path)
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                row = json.loads(raw)
            except ValueError:
                continue
            if isinstance(row, dict):
                yield lineno, row


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of :func:`read_jsonl` that carry an ``id``."""
    return [row for _, row in read_jsonl(path) if "id" in row]


def append_jsonl(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Append ``rows`` to ``path``, one JSON object a line, flushed to disk; returns the count.

    Each call writes whole lines in one ``write``, so a kill leaves at most one partial line,
    which :func:`repair_tail` removes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row) + "\n" for row in rows)
    if text:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return text.count("\n")


def _last_good_offset(data: bytes) -> int:
    """Byte length of ``data`` up to its last complete line that parses as JSON."""
    end = len(data)
    while end > 0:
        start = data.rfind(b"\n", 0, end - 1) + 1 if end > 1 else 0
        line = data[start:end]
        if line.endswith(b"\n"):
            try:
                json.loads(line)
                return end
            except ValueError:
                pass
        end = start
    return 0


def repair_tail(path: str | os.PathLike[str]) -> int:
    """Cut ``path`` back to its last complete, parseable line (what a killed run leaves after
    it); returns the number of bytes removed (0 for a whole or a missing file)."""
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    good = _last_good_offset(data)
    if good < len(data):
        with open(path, "r+b") as fh:
            fh.truncate(good)
    return len(data) - good


def done_ids(files: Iterable[str | os.PathLike[str]]) -> set[str]:
    """Ids of the rows already written to any of ``files`` (bad lines ignored)."""
    return {str(row["id"]) for f in files for row in read_rows(f)}


# --------------------------------------------------------------------------------------------
# Shards and locks
# --------------------------------------------------------------------------------------------


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (shard i of n, as ``--shard`` takes it) to ``(i, n)`` with ``0 <= i < n``.

    Raises:
        ConfigError: When the text is not of that form.
    """
    try:
        i_text, n_text = text.split("/")
        i, n = int(i_text), int(n_text)
    except ValueError:
        raise ConfigError(f"shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ConfigError(f"shard {text!r}: need 0 <= i < n")
    return i, n


def shard_of(key: str, count: int) -> int:
    """The shard of an item: a stable hash of its id (the same in every process and run).

    BLAKE2, not CRC32: CRC is linear, so ids that differ in a few digits (as ids of one
    dataset do) can all share their low bits and land in one shard.
    """
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % count


def shard_items(items: Sequence[T], index: int, count: int, key: Callable[[T], str]) -> list[T]:
    """The items of shard ``index`` of ``count`` (by :func:`shard_of` of ``key(item)``), in
    their order."""
    if count <= 1:
        return list(items)
    return [item for item in items if shard_of(key(item), count) == index]


def distributed_shard() -> tuple[int, int, Any] | None:
    """``(process_index, num_processes, device)`` when launched with several processes by
    ``accelerate launch`` (or torchrun), else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return state.process_index, state.num_processes, state.device


def file_lock(path: str | os.PathLike[str]) -> FileLock:
    """An inter-process lock on the file ``path`` (created with its folder), for ``with``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def run_task(path: str | os.PathLike[str]) -> str | None:
    """The task a training run was made for (``dynamics``, ``world``, ``world-rl``...), read
    from its ``config.yaml``; ``path`` may be the run or its ``adapter``/``merged`` folder.
    None for anything else (a base model)."""
    path = Path(path)
    for folder in (path, path.parent) if path.name in ("adapter", "merged") else (path,):
        if (folder / "config.yaml").is_file():
            try:
                task = read_yaml(folder / "config.yaml").get("task")
            except ConfigError:
                return None
            return task if isinstance(task, str) else None
    return None
