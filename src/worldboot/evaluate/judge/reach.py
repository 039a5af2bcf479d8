"""Whether the judge's server can be reached: a run against a closed port or a wrong host stops
after the first batch of requests fails to connect, instead of retrying every request (minutes)
and writing a table of dashes."""

from __future__ import annotations

import threading

from worldboot.errors import ConfigError


class Reachability:
    """Connection failures of the judge's requests, across its worker threads.

    A request counts as *unreachable* when it failed to connect after the client's own retries
    (``openai.APIConnectionError``, not a time-out: a slow server was reached). Any answer of the
    server, an error status included, shows that it can be reached and ends a streak. The judge
    stops at the first unreachable request while none has got through (the judge sends its
    first request alone), and later after ``stop_after`` unreachable requests in a row.

    Args:
        stop_after: Unreachable requests in a row that stop a judge that did reach its server
            (its ``concurrency``: a batch in flight).
        where: The server, for the message (``judge.base_url`` or the client's default).
    """

    def __init__(self, stop_after: int, where: str) -> None:
        self.stop_after = max(1, stop_after)
        self.where = where
        self._lock = threading.Lock()
        self._streak = 0
        self._failed = 0
        self._answered = 0
        self._first = ""
        self._cut_off = False
        #: Why no more requests go out (set once; the worker threads check it before a call).
        self.halted: str | None = None

    def answered(self) -> None:
        """The server answered a request (with a reply or an error status)."""
        with self._lock:
            self._answered += 1
            self._streak = 0

    def unreachable(self, detail: str) -> None:
        """A request could not connect (``detail``: the error, scrubbed of the key)."""
        with self._lock:
            self._failed += 1
            self._streak += 1
            self._first = self._first or detail
            if (self._streak >= self.stop_after or not self._answered) and self.halted is None:
                self._cut_off = True
                self.halted = "the judge could not be reached"

    @property
    def tried(self) -> bool:
        """Whether a request has reached the server or failed to connect."""
        with self._lock:
            return bool(self._answered or self._failed)

    def halt(self, reason: str) -> None:
        """Send no more requests (e.g. the server refused the key)."""
        with self._lock:
            self.halted = self.halted or reason

    def error(self, retries: int, kept: int, cache: str) -> ConfigError | None:
        """The one-line error when the judge could not be reached, or None.

        It could not when the first request sent failed to connect, or ``stop_after`` requests
        in a row did.

        Args:
            retries: The client's retries per request (``judge.max_retries``).
            kept: Judgments in the cache, kept for a rerun.
            cache: The cache file.
        """
        with self._lock:
            if not self._cut_off:
                return None
            why = f"{self._streak} requests in a row failed" if self._answered else "the first request failed"
            first = self._first
        return ConfigError(
            f"the judge could not be reached at {self.where}: {why} to connect after {retries} "
            f"retries ({first}); check judge.base_url and that the server runs. Stopped early: the "
            f"{kept} judgment(s) in {cache} are kept, and a rerun asks only for the rest"
        )
