"""Verdicts cached in SQLite by (model, prompt, images): a rerun asks the judge only for what is new."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

from worldboot.errors import DataError

# -- cache -----------------------------------------------------------------------------------


class JudgeCache:
    """Paid replies in SQLite, keyed by a hash of everything that decides the reply.

    One connection shared by the worker threads behind a lock (SQLite writes are serial anyway);
    every insert is committed at once so a killed run keeps what it paid for.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as err:
            raise DataError(f"judge cache {self.path} is not a usable SQLite file: {err}") from None

    def get(self, key: str) -> tuple[str, int, int] | None:
        """``(reply, prompt_tokens, completion_tokens)`` or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT reply, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], int(row[1]), int(row[2])) if row else None

    def put(self, key: str, model: str, reply: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Store one reply (replacing any earlier one under the key)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, reply, prompt_tokens, completion_tokens, time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()
