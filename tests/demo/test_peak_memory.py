"""The demo's per-stage peak memory: a block that holds a large array shows it."""

from __future__ import annotations

import numpy as np
import psutil

from worldboot.demo import PeakMemory


def test_peak_memory_sees_a_temporary_allocation():
    before = psutil.Process().memory_info().rss / 2**20
    with PeakMemory(interval=0.005) as mem:
        block = np.ones(200 * 2**20 // 8)  # 200 MB, touched
        for _ in range(50):  # hold it while the sampler runs
            block += 1
        del block
    assert mem.peak_mb >= before + 150, (before, mem.peak_mb)
    after = psutil.Process().memory_info().rss / 2**20
    assert mem.peak_mb > after + 100  # the peak, not the level at the end
