"""The trajectory triplet, manifests, and the problems report every loader fills.

A triplet is (id, subset, source image, action text, target image, metadata). Images are
paths; a manifest is a JSONL file with one triplet per line, its paths relative to the
manifest's directory (or to a declared root).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from worldboot.errors import DataError, resolve_path, unless_loop
from worldboot.runs import write_atomic


@dataclass
class Triplet:
    """One (o_s, a, o_t) trajectory step.

    Attributes:
        id: Unique within its manifest.
        subset: e.g. ``kubric``, ``something``, ``world/move``.
        source: Path of the source observation o_s.
        action: The action text a.
        target: Path of the target observation o_t (None when the benchmark has none).
        meta: Anything else (original fields, frame indices, class labels).
    """

    id: str
    subset: str
    source: str
    action: str
    target: str | None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain data for one JSONL line."""
        return asdict(self)


@dataclass
class Problem:
    """One thing wrong with the input, with where it is.

    Attributes:
        file: The file that holds the bad entry.
        line: 1-based line (JSONL/CSV) or entry index (JSON list); 0 when not applicable.
        reason: What is wrong, in a few words.
    """

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.reason}"


class Problems:
    """Collects problems; in strict mode the first one stops the run.

    Args:
        strict: Raise :class:`DataError` on the first problem instead of skipping it.
    """

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.items: list[Problem] = []

    def add(self, file: str | os.PathLike[str], line: int, reason: str) -> None:
        """Record a problem (or raise it in strict mode)."""
        problem = Problem(str(file), line, reason)
        if self.strict:
            raise DataError(str(problem))
        self.items.append(problem)

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)

    def counts(self) -> Counter:
        """Number of problems per reason (the text before any colon)."""
        return Counter(p.reason.split(":")[0] for p in self.items)

    def write(self, path: str | os.PathLike[str]) -> None:
        """Write the report as JSONL (atomically)."""
        write_atomic(path, "".join(json.dumps(asdict(p)) + "\n" for p in self.items))


def iter_jsonl(path: str | os.PathLike[str], problems: Problems) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each JSON object line of a user's JSONL file.

    Blank lines are skipped; a line that is not UTF-8, not valid JSON, or not an object is
    recorded in ``problems`` with its 1-based line number (raised in strict mode) and skipped.
    (Files a stage wrote itself are read with :func:`worldboot.runs.read_jsonl`.)
    """
    with open(path, "rb") as fh:
        # A file read in binary splits at \n only: splitlines() also ends a line at a lone \r
        # (an old Mac editor's file was one malformed line). JSON has no raw \r in a value.
        lines = (part for chunk in fh for part in (chunk.splitlines() or [b""]))
        for lineno, data in enumerate(lines, start=1):
            try:
                # utf-8-sig on the first line: a byte-order mark is not part of the JSON.
                raw = data.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                problems.add(path, lineno, f"not UTF-8 text (byte {err.start + 1} of the line)")
                continue
            if not raw.strip():
                continue
            try:
                row = json.loads(raw)
            except json.JSONDecodeError as err:
                problems.add(path, lineno, f"malformed JSON: {err.msg}")
                continue
            except (ValueError, RecursionError) as err:  # an integer too long, nesting too deep
                problems.add(path, lineno, f"unreadable JSON: {str(err).splitlines()[0] or type(err).__name__}")
                continue
            if not isinstance(row, dict):
                problems.add(path, lineno, "malformed JSON: not an object")
                continue
            yield lineno, row


def visible_files(
    root: str | os.PathLike[str], suffixes: tuple[str, ...], hidden: list[Path] | None = None
) -> list[Path]:
    """The files (or links) under ``root``, recursively and sorted, whose suffix (any case) is one
    of ``suffixes``, leaving out hidden names: a name with a leading dot anywhere below ``root``
    is an unfinished atomic write (``.name.tmpPID.png``, :func:`worldboot.runs.atomic_path`), a
    macOS sidecar (``._clip.mp4``) or a tool's folder (``.git``), never the user's data.

    A linked folder is walked like a real one (videos kept elsewhere and linked in), each real
    folder once: a link back up the tree, or a second link to one folder, is not walked again.

    Args:
        root: The folder to walk.
        suffixes: Lower-case suffixes with their dot (``(".mp4",)``).
        hidden: When given, receives the hidden files with one of ``suffixes`` that were left
            out (not those inside hidden folders), so that a caller can count them.
    """
    found = []
    walked: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in walked:
            dirs[:] = []
            continue
        walked.add(real)
        # Hidden folders are not walked at all; sorted, so that of two links to one folder the
        # same one is walked on every file system.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(folder) / name
            if path.suffix.lower() in suffixes and (path.is_file() or path.is_symlink()):
                if not name.startswith("."):
                    found.append(path)
                elif hidden is not None:
                    hidden.append(path)
    return sorted(found)


def resolve_under(root: str | os.PathLike[str], rel: str, shown: str | None = None) -> Path:
    """Resolve ``rel`` under ``root``, refusing anything that escapes it.

    Args:
        shown: How to name the path in an error (default: ``rel``), e.g. as a data file wrote it.

    Raises:
        DataError: For ``..`` escapes, absolute paths outside ``root``, and symbolic link loops.
    """
    shown = rel if shown is None else shown
    # Checked on the path as written (``..`` and absolute paths) and on the resolved one, so
    # that a folder the user links into the root (``data -> /mnt/aurora``) is accepted.
    if "\0" in rel:  # the operating system refuses such a name (a ValueError deep in os)
        raise DataError(f"path holds a NUL character: {shown!r}")
    root_abs = Path(os.path.abspath(root))
    written = Path(os.path.normpath(root_abs / rel))
    try:
        candidate = resolve_path(written)
        real_root = resolve_path(root_abs)
    except OSError:  # only a loop: resolve_path lets a missing path through
        raise DataError(f"path runs into a symbolic link loop: {shown}") from None
    if not (_within(written, root_abs) or _within(candidate, real_root)):
        raise DataError(f"path escapes the data root {root_abs}: {shown}")
    return candidate


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def content_hash(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (hex): the identity of an image across paths and datasets.

    Raises:
        DataError: When the file cannot be read.
    """
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror or err}") from None
    return h.hexdigest()


def image_problem(path: str | os.PathLike[str], role: str = "", shown: str | None = None) -> str | None:
    """Why ``path`` is not a usable image, or None when it is one.

    The pixels are decoded, as every later stage will decode them: a PNG whose chunks and
    checksums hold (all that PIL's ``verify`` checks) can still carry a pixel stream that does
    not decode. That costs a few milliseconds an image (a 512-px photo: about 1 ms as JPEG, 8 as PNG),
    cheap enough to run over a whole dataset before a long job starts.

    Args:
        path: The image file.
        role: Word put before "image" in the reason (``"target"`` gives ``"missing target image"``).
        shown: How to name the file in the reason (default: ``path``), e.g. as the data file wrote it.

    Returns:
        ``"missing [role] image: FILE"``, ``"unreadable [role] image: FILE: why"`` or None.
    """
    from PIL import Image

    what = f"{role} image" if role else "image"
    shown = shown if shown is not None else str(path)
    if os.path.isdir(path):
        return f"{what} is a folder: {shown}"
    if os.path.exists(path) and not os.path.isfile(path):  # a named pipe, a device: reading could block
        return f"{what} is not a regular file: {shown}"
    if not os.path.isfile(path):
        return f"missing {what}: {shown}"
    try:
        with Image.open(path) as img:
            img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        return f"unreadable {what}: {shown}: {err}"
    return None


#: Longest action text a loader accepts, in characters. Real instructions are a sentence (the
#: longest of AURORA-BENCH's Kubric and Something-Something subsets is under 200); a longer text
#: is a broken record, and a model would be asked for a sequence it has no positions for.
MAX_ACTION_CHARS = 2000


def action_text_problem(text: str) -> str | None:
    """Why an action text (already stripped) cannot be used, or None: the one rule every
    loader applies (JSONL manifests, AURORA JSON, EPIC CSV)."""
    if not text:
        return "empty action"
    if len(text) > MAX_ACTION_CHARS:
        return f"action of {len(text)} characters (at most {MAX_ACTION_CHARS})"
    return None


#: Field -> (allowed JSON types, what to say). ``target`` may be null (no target).
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "id": ((str, int), "a string"),
    "source": ((str,), "a path string"),
    "target": ((str, type(None)), "a path string or null"),
    "action": ((str,), "a string"),
    "subset": ((str,), "a string"),
    "meta": ((dict, type(None)), "an object"),
}


def wrong_types(row: dict[str, Any], field_types: dict[str, tuple[tuple[type, ...], str]] | None = None) -> str | None:
    """The first field of a row whose JSON type is wrong, as a problem's reason.

    Args:
        row: A JSON object read from a user's file.
        field_types: Field -> (allowed types, what to say); default: a manifest row's. A
            boolean never passes for a number (JSON's ``true`` is not 1).
    """
    for key, (types, what) in (field_types or _FIELD_TYPES).items():
        if key in row and (not isinstance(row[key], types) or isinstance(row[key], bool)):
            return f"field {key!r} must be {what}, got {type(row[key]).__name__ if row[key] is not None else 'null'}"
    return None


def read_manifest(
    path: str | os.PathLike[str],
    problems: Problems | None = None,
    root: str | os.PathLike[str] | None = None,
    check_images: bool = False,
) -> list[Triplet]:
    """Read a JSONL manifest; paths become absolute, resolved under ``root`` (default: its folder).

    Malformed lines, lines with missing or wrongly typed fields, an empty action or an id seen
    on an earlier line are recorded in ``problems`` with their line number and skipped (or
    raise in strict mode). With
    ``check_images``, lines whose source or target image is missing or unreadable are too.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path} is a folder: give the manifest file")
    if not path.is_file():
        raise unless_loop(path, DataError(f"manifest not found: {path}"))
    problems = problems if problems is not None else Problems()
    root = Path(root) if root is not None else path.parent
    out: list[Triplet] = []
    first_line: dict[str, int] = {}
    for lineno, row in iter_jsonl(path, problems):
        missing = [k for k in ("id", "source", "action") if k not in row]
        if missing:
            problems.add(path, lineno, f"missing field: {', '.join(missing)}")
            continue
        wrong = wrong_types(row)
        if wrong:
            problems.add(path, lineno, wrong)
            continue
        sid = str(row["id"])
        if sid in first_line:
            problems.add(path, lineno, f"duplicate id: {sid} (first on line {first_line[sid]})")
            continue
        bad_action = action_text_problem(str(row["action"]).strip())
        if bad_action:
            problems.add(path, lineno, bad_action)
            continue
        try:
            source = str(resolve_under(root, row["source"]))
            target = str(resolve_under(root, row["target"])) if row.get("target") else None
        except DataError as err:
            problems.add(path, lineno, str(err))
            continue
        if check_images:
            checks = (image_problem(source, "source", row["source"]),)
            if target:
                checks += (image_problem(target, "target", row["target"]),)
            bad = next(filter(None, checks), None)
            if bad:
                problems.add(path, lineno, bad)
                continue
        first_line[sid] = lineno
        out.append(
            Triplet(
                id=sid,
                subset=str(row.get("subset", "default")),
                source=source,
                action=str(row["action"]).strip(),
                target=target,
                meta=dict(row.get("meta") or {}),
            )
        )
    return out


def write_manifest(
    path: str | os.PathLike[str], triplets: Iterable[Triplet], relative_to: str | os.PathLike[str] | None = None
) -> None:
    """Write triplets as JSONL atomically; paths are made relative to ``relative_to`` (default:
    the manifest's folder) when they lie under it."""
    path = Path(path)
    base = resolve_path(relative_to or path.parent)

    def rel(p: str | None) -> str | None:
        if p is None:
            return None
        try:
            resolved = resolve_path(p)
            return os.path.relpath(resolved, base) if base in resolved.parents else p
        except (ValueError, OSError):  # another drive (Windows), a symbolic link loop
            return p

    # The row is built from the fields, not with to_json: dataclasses.asdict deep-copies the
    # meta (a world triplet's two scenes). With each path resolved once, 5000 recognition rows
    # are written in 0.65 s against 1.25 s.
    lines = []
    for t in triplets:
        row = {f.name: getattr(t, f.name) for f in fields(t)}
        row["source"], row["target"] = rel(t.source), rel(t.target)
        lines.append(json.dumps(row) + "\n")
    write_atomic(path, "".join(lines))
