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
from collections.abc import Iterator
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


class VoteStore:
    """The votes database of one study.

    Args:
        path: The SQLite file (created with its folder unless ``create`` is False).
        study: The study's name; a database made for another study is refused.
        create: Create the file when absent; False raises :class:`DataError` instead.

    Raises:
        ConfigError: When the database belongs to another study.
        DataError: When the file is not a SQLite database, or is absent and ``create`` is False.
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
        try:
            with self._connect() as con:
                con.executescript(SCHEMA)
                con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('study', ?)", (study,))
                owner = con.execute("SELECT value FROM meta WHERE key = 'study'").fetchone()[0]
        except sqlite3.DatabaseError as err:
            raise DataError(f"{self.path}: not a votes database ({err})") from None
        if owner != study:
            raise ConfigError(f"{self.path} holds the votes of study {owner!r}, not {study!r}; use --db")

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=30)) as con, con:
            # The context manager of a connection commits (or rolls back) one transaction.
            yield con

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

    def csv_text(self, study, votes: list[Vote] | None = None) -> str:
        """All votes as CSV, with each item's subset and action from ``study``."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for v in self.votes() if votes is None else votes:
            item = study.item(v.item_id)
            writer.writerow(
                [
                    v.annotator,
                    v.item_id,
                    item.subset if item else "",
                    item.action if item else "",
                    v.best,
                    v.worst,
                    json.dumps(v.shown),
                    v.created_at,
                    v.updated_at,
                ]
            )
        return buf.getvalue()

    def export_csv(self, path: str | os.PathLike[str], study) -> int:
        """Write all votes to a CSV file atomically; returns the number of votes."""
        votes = self.votes()
        write_atomic(path, self.csv_text(study, votes))
        return len(votes)


def _shown(text: str) -> list[str] | None:
    try:
        shown = json.loads(text)
    except (TypeError, ValueError):
        return None
    return shown if isinstance(shown, list) and all(isinstance(m, str) for m in shown) else None
