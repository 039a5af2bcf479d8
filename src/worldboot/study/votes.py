"""Votes of a blind study in SQLite: one row per (annotator, item), a re-submit replaces it.

SQLite (the standard library's ``sqlite3``) gives the uniqueness constraint, atomic upserts
and safe concurrent writers for free; a connection per call keeps it thread-safe under the web
server's thread pool. The ``meta`` table records which study the database belongs to, so that
votes of two studies never mix.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path

from worldboot.errors import ConfigError, DataError
from worldboot.runs import write_atomic

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS votes (
    annotator TEXT NOT NULL,
    item_id TEXT NOT NULL,
    best TEXT NOT NULL,
    worst TEXT NOT NULL,
    shown TEXT NOT NULL,          -- JSON list of the model names in the order shown
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    UNIQUE (annotator, item_id),
    CHECK (best <> worst)
);
"""
CSV_COLUMNS = (
    "annotator",
    "item_id",
    "subset",
    "action",
    "best",
    "worst",
    "shown",
    "created_at",
    "updated_at",
)


@dataclass
class Vote:
    """One annotator's judgement of one item.

    Attributes:
        annotator: Who voted.
        item_id: The item.
        best: Model chosen as best.
        worst: Model chosen as worst.
        shown: Model names in the order they were shown.
        created_at: First submission (UTC, ISO 8601).
        updated_at: Last submission.
    """

    annotator: str
    item_id: str
    best: str
    worst: str
    shown: list[str]
    created_at: str
    updated_at: str

    def score(self, model: str) -> int:
        """+1 if ``model`` was chosen best, -1 if worst, 0 otherwise (the paper's Table 6)."""
        return 1 if model == self.best else -1 if model == self.worst else 0


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class VotesUnavailable(DataError):
    """The votes database cannot be used any more (moved, deleted or replaced while in use)."""


class VoteStore:
    """The votes database of one study.

    The file is created (with its tables and ``meta`` row) only when it is new, or an empty
    database; every later connection opens it without creating it, so a database moved away
    while the server runs is reported, never silently replaced by an empty one.

    Args:
        path: The SQLite file (created with its folder unless ``create`` is False).
        study: The study's name; a database made for another study is refused.
        create: Create the file when absent; False raises :class:`DataError` instead, and opens
            the file read-only (the export and the analysis change nothing in it).

    Raises:
        ConfigError: When the database belongs to another study.
        DataError: When the file is not a SQLite database, is one without worldboot's ``meta``
            row (another program's database: its tables are never added to), or is absent and
            ``create`` is False.
    """

    def __init__(self, path: str | os.PathLike[str], study: str, create: bool = True) -> None:
        self.path = Path(path)
        self.study = study
        #: Rows the last :meth:`votes` skipped: their order of models is not a list naming the
        #: best and the worst (the server never writes one; a hand edit can).
        self.unreadable = 0
        if self.path.is_dir():
            raise DataError(f"votes database {self.path} is a folder: name the SQLite file (--db FILE)")
        if not self.path.is_file():
            if not create:
                raise DataError(f"votes database not found: {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        #: The file as an SQLite URI: later connections open it with ``mode=rw``, never creating it.
        self._uri = self.path.absolute().as_uri()
        first = f"{self._uri}?mode={'rwc' if create else 'ro'}"
        try:
            with closing(sqlite3.connect(first, uri=True, timeout=30)) as con, con:
                owner = self._owner(con, create)
        except sqlite3.DatabaseError as err:
            raise DataError(f"{self.path}: not a votes database ({err})") from None
        if owner != study:
            raise ConfigError(f"{self.path} holds the votes of study {owner!r}, not {study!r}; use --db")

    def _owner(self, con: sqlite3.Connection, create: bool) -> str:
        """The study the database belongs to; an empty database (with ``create``) is made one
        of this study's.

        Raises:
            DataError: For a database without worldboot's ``meta`` row naming a study.
        """
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if create and not tables:  # a new file, or an empty database
            con.executescript(SCHEMA)
            con.execute("INSERT INTO meta (key, value) VALUES ('study', ?)", (self.study,))
            return self.study
        row = con.execute("SELECT value FROM meta WHERE key = 'study'").fetchone() if "meta" in tables else None
        if row is None:
            held = f"; it holds the tables {sorted(tables)}" if tables else ""
            raise DataError(
                f"{self.path} is not a votes database of worldboot (no `meta` row naming its study{held}): "
                "name another file (--db)"
            )
        if create:
            con.executescript(SCHEMA)  # a votes table dropped by hand comes back, empty
        return row[0]

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A connection to the existing file, committing (or rolling back) one transaction.

        Raises:
            VotesUnavailable: When the file is gone or no longer a votes database.
        """
        try:
            with closing(sqlite3.connect(f"{self._uri}?mode=rw", uri=True, timeout=30)) as con, con:
                yield con
        except (sqlite3.ProgrammingError, sqlite3.IntegrityError):  # a bug, not the file
            raise
        except sqlite3.DatabaseError as err:
            if not self.path.is_file():
                raise VotesUnavailable(
                    f"the votes database {self.path} is gone (moved or deleted while in use): "
                    "put it back, or restart with --db naming where it is"
                ) from None
            raise VotesUnavailable(f"the votes database {self.path} cannot be used: {err}") from None

    def record(self, annotator: str, item_id: str, best: str, worst: str, shown: list[str]) -> bool:
        """Store a vote, replacing the annotator's earlier vote on the item.

        Returns:
            True when an earlier vote was replaced.

        Raises:
            DataError: When best and worst are the same model or not among ``shown``.
        """
        if best == worst:
            raise DataError("the best and the worst must be different outputs")
        if best not in shown or worst not in shown:
            raise DataError("best and worst must be among the shown outputs")
        now = _now()
        with self._connect() as con:
            before = con.execute(
                "SELECT 1 FROM votes WHERE annotator = ? AND item_id = ?", (annotator, item_id)
            ).fetchone()
            con.execute(
                """INSERT INTO votes (annotator, item_id, best, worst, shown, created_at, updated_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (annotator, item_id) DO UPDATE SET
                     best = excluded.best, worst = excluded.worst, shown = excluded.shown,
                     updated_at = excluded.updated_at""",
                (annotator, item_id, best, worst, json.dumps(shown), now, now),
            )
        return before is not None

    def votes(self, annotator: str | None = None) -> list[Vote]:
        """All votes (of one annotator when given), oldest first."""
        query = "SELECT annotator, item_id, best, worst, shown, created_at, updated_at FROM votes"
        args: tuple[str, ...] = ()
        if annotator is not None:
            query += " WHERE annotator = ?"
            args = (annotator,)
        with self._connect() as con:
            rows = con.execute(query + " ORDER BY created_at, rowid", args).fetchall()
        out, self.unreadable = [], 0
        for a, i, b, w, s, c, u in rows:
            shown = _shown(s)
            if shown is None or b not in shown or w not in shown:  # a row edited outside worldboot
                self.unreadable += 1
                continue
            out.append(Vote(a, i, b, w, shown, c, u))
        return out

    def voted_items(self, annotator: str) -> dict[str, Vote]:
        """The annotator's votes by item id."""
        return {v.item_id: v for v in self.votes(annotator)}

    def csv_text(self, labels: Mapping[str, tuple[str, str]], votes: list[Vote] | None = None) -> str:
        """All votes as CSV, with each item's subset and action from ``labels`` (item id ->
        (subset, action)); empty for an item ``labels`` does not know."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for v in self.votes() if votes is None else votes:
            subset, action = labels.get(v.item_id, ("", ""))
            writer.writerow(
                [v.annotator, v.item_id, subset, action, v.best, v.worst, json.dumps(v.shown), v.created_at, v.updated_at]
            )
        return buf.getvalue()

    def export_csv(self, path: str | os.PathLike[str], labels: Mapping[str, tuple[str, str]]) -> int:
        """Write all votes to a CSV file atomically (see :meth:`csv_text`); returns the number of votes."""
        votes = self.votes()
        write_atomic(path, self.csv_text(labels, votes))
        return len(votes)


def _shown(text: str) -> list[str] | None:
    try:
        shown = json.loads(text)
    except (TypeError, ValueError):
        return None
    return shown if isinstance(shown, list) and all(isinstance(m, str) for m in shown) else None
