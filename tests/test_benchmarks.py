"""The benchmarks print as quietly as the ``worldboot`` command: each takes ``--verbose`` and
otherwise calls :func:`worldboot.progress.quiet_libraries`, which keeps the libraries' known
noise (DeepSpeed's accelerator warning, transformers' "Loading weights" bars) off the console."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("bench_*.py"))


def test_there_are_benchmarks():
    assert len(BENCHMARKS) >= 8


@pytest.mark.parametrize("path", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_every_benchmark_is_quiet_unless_verbose(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    flags = [a.value for c in calls if isinstance(c.func, ast.Attribute) and c.func.attr == "add_argument"
             for a in c.args if isinstance(a, ast.Constant)]
    assert "--verbose" in flags, f"{path.name} has no --verbose"
    assert any(isinstance(c.func, ast.Name) and c.func.id == "quiet_libraries" for c in calls), (
        f"{path.name} does not call quiet_libraries"
    )


#: What a benchmark does, in short: the quiet set-up unless --verbose, then DeepSpeed's import
#: (it warns "Setting accelerator to CPU" on a machine without a GPU) and a model loaded from disk.
SCRIPT = """
import sys
from worldboot.progress import quiet_libraries
if "--verbose" not in sys.argv:
    quiet_libraries()
import deepspeed
from worldboot.models import load_backbone
load_backbone(sys.argv[1])
print("done")
"""


def test_quiet_libraries_keeps_the_known_noise_off(tiny_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "DS_", "WORLDBOOT_NO"))}

    def run(*extra: str) -> str:
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tiny_dir), *extra], capture_output=True, text=True,
                              env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout + proc.stderr

    quiet = run()
    assert quiet.split() == ["done"], quiet
    loud = run("--verbose")
    assert "Loading weights" in loud
    import torch

    if not torch.cuda.is_available():  # DeepSpeed warns only where it finds no accelerator
        assert "Setting accelerator to CPU" in loud
