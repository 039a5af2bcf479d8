"""The Ray cluster commands of docs/scaling-out.md, with sizes changed: a head started with `ray start --head`,
then `worldboot keyframes` (RAY_ADDRESS) and `worldboot annotate --ray-address` against it, as
separate processes (with Ray's token authentication, as `ray start` sets it up); their outputs
equal the local engine's."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ray.data", reason="Ray Data is part of the dev install: pip install -e '.[dev]'")
pytestmark = pytest.mark.timeout(600)
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def head(tmp_path):
    """`ray start --head --block` on this machine (2 CPUs), in a process group of its own: stopped
    by ending that group, so that another test's Ray on the machine lives on (`ray stop --force`
    would end every Ray of this user, a parallel test's included)."""
    import signal
    import tempfile
    import time

    ray = shutil.which("ray", path=str(BIN))
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token"}
    log = (tmp_path / "ray-head.log").open("w")
    proc = subprocess.Popen([ray, "start", "--head", "--block", "--port", str(port), "--num-cpus", "2",
                             "--include-dashboard", "false", "--node-ip-address", "127.0.0.1",
                             "--temp-dir", tempfile.mkdtemp(prefix="ray-", dir="/tmp")],  # Ray's sockets: < 108 bytes
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "ray-head.log").read_text()[-2000:]
            up = subprocess.run([ray, "status", "--address", address], capture_output=True, env=env, timeout=60)
            if up.returncode == 0:
                break
            assert time.monotonic() < deadline, up.stderr[-2000:]
            time.sleep(1)
        yield address
    finally:
        # Ray's orderly stop takes half a minute here; what the test started is all in the group.
        _end_group(proc, signal.SIGTERM, 5) or _end_group(proc, signal.SIGKILL, 30)
        log.close()


def _end_group(proc: subprocess.Popen, sig: int, wait: float) -> bool:
    """Send ``sig`` to the process group of ``proc``; whether it ended within ``wait`` seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=wait)
        return True
    except subprocess.TimeoutExpired:
        return False


def _worldboot(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "worldboot.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "WORLDBOOT_NO_PROGRESS": "1", "RAY_AUTH_MODE": "token", **(env or {})},
                          timeout=300)


def test_mine_and_annotate_a_folder_of_videos_on_a_ray_cluster(head, tmp_path, tiny_dir):
    from worldboot.world.gen import generate_clips

    generate_clips(tmp_path / "videos", 3, seed=5, size=96)
    for engine, out in (("local", tmp_path / "local"), ("ray", tmp_path / "ray")):
        env = {"RAY_ADDRESS": head} if engine == "ray" else {}
        mined = _worldboot("keyframes", str(tmp_path / "videos"), "--out", str(out / "mined"), "--engine", engine,
                           "--workers", "2", "--k", "3", "--interval", "10", env=env)
        assert mined.returncode == 0, mined.stderr[-3000:]
        extra = ["--ray-address", head, "--actors", "2"] if engine == "ray" else []
        annotated = _worldboot("annotate", str(out / "mined" / "pairs.jsonl"), "--cdm", str(tiny_dir), "--out",
                               str(out / "annotated"), "--engine", engine, "--batch-size", "2", *extra)
        assert annotated.returncode == 0, annotated.stderr[-3000:]
    for name in ("mined/pairs.jsonl", "annotated/annotated.jsonl"):
        local = (tmp_path / "local" / name).read_text()
        # Paths inside the rows are relative to each run's folder, so the two runs' rows match.
        assert local and (tmp_path / "ray" / name).read_text() == local, name
    # Without an address a run starts a Ray of its own, though `ray start` left a cluster running here
    # (Ray would join that one and refuse num_cpus with a traceback).
    own = _worldboot("annotate", str(tmp_path / "local" / "mined" / "pairs.jsonl"), "--cdm", str(tiny_dir), "--out",
                     str(tmp_path / "own"), "--engine", "ray", "--batch-size", "2")
    assert own.returncode == 0, own.stderr[-3000:]
    # Ray's and Ray Data's INFO and WARNING lines stay off the console without --verbose.
    assert not [line for line in own.stderr.splitlines() if "\tINFO " in line or "\tWARNING " in line], own.stderr
    def labels(path):
        return [(row["id"], row["action"]) for row in map(json.loads, path.read_text().splitlines())]

    assert labels(tmp_path / "own" / "annotated.jsonl") == labels(tmp_path / "local" / "annotated" / "annotated.jsonl")
