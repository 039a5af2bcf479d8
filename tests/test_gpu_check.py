"""``scripts/gpu-check.sh``, run where there is no GPU: it says so in one line and exits 0; with
``--device cpu`` it runs its pipeline tiny (tokenize, training, best-of-1 and best-of-8; its
ZeRO-2 launch and Ray step are left to their own tests), so that it cannot rot until a GPU runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"
ENV = {**os.environ, "PYTHON": sys.executable}


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_it_says_so_and_exits_0():
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu-check: no CUDA device here (torch.cuda.is_available() is False): nothing to check"]


@pytest.mark.timeout(900)
def test_the_whole_check_runs_on_cpu(tmp_path):
    pytest.importorskip("deepspeed", reason="DeepSpeed is part of the dev install: pip install -e '.[dev]'")
    # One process and no Ray step, for CI's minutes: ZeRO-2 over two processes and the Ray engine
    # have their own tests (tests/train/test_deepspeed.py, tests/test_ray_data.py).
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--processes", "1", "--no-ray", "--json", "--work",
                           str(tmp_path)],
                          capture_output=True, text=True, env=ENV, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["gpus"] == 1 and figures["samples"] == 5
    assert figures["train_tokens_per_s"] > 0 and figures["best_of_8_samples_per_s"] > 0
    assert "training (one process" in done.stdout
    rows = [json.loads(line) for line in (tmp_path / "cwm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]
    for pred in ("pred-1", "pred-8"):
        assert len((tmp_path / pred / "predictions.jsonl").read_text().splitlines()) == 5, pred
    best = [json.loads(line) for line in (tmp_path / "pred-8" / "predictions.jsonl").read_text().splitlines()]
    assert all(len(r["candidates"]) == 8 and "score" in r["candidates"][r["chosen"]] for r in best)
