"""Peak memory of a demo stage, for the report's time-and-memory table."""

from __future__ import annotations

import threading


class PeakMemory:
    """Peak resident memory (MB) of this process while a block runs.

    ``resource``'s ``ru_maxrss`` only knows the peak since the process started, so a thread
    samples psutil's RSS every ``interval`` seconds instead (a peak shorter than that can be
    missed; the demo's stages hold their memory for seconds).
    """

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            self.peak_mb = max(self.peak_mb, proc.memory_info().rss / 2**20)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
