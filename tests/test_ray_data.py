"""Ray Data as the engine of annotation and generation, on a local Ray (2 CPUs): the same bytes
as the local run, resume without duplicates, a killed actor's batch retried, a batch that
never returns reported, an unreachable cluster in one line."""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray Data is part of the dev install: pip install -e '.[dev]'")
pytest.importorskip("ray.data")

from helpers import square_triplets  # noqa: E402
from mining.test_annotate import make_pairs  # noqa: E402
from worldboot.cli import main  # noqa: E402
from worldboot.errors import DataError, UserError  # noqa: E402
from worldboot.infer.generate import GenerateConfig, run_generate  # noqa: E402
from worldboot.mining.annotate import AnnotateConfig, annotate_pairs  # noqa: E402
from worldboot.ray_data import RaySettings, run_jobs, start  # noqa: E402
from worldboot.runs import read_rows  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray for the module (starting it costs seconds)."""
    from ray import cloudpickle  # Ray's own copy serialises the work functions

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the test's own, shipped by value
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _tree(folder: Path) -> dict[str, bytes]:
    """Every output file's bytes (the run's own records, which hold times and argv, aside)."""
    skip = {"meta.json", "log.txt", "config.yaml", "summary.json"}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in skip}


def test_annotate_on_ray_writes_what_the_local_run_writes_and_resumes(tmp_path, tiny_dir):
    from worldboot.models import load_backbone

    pairs = make_pairs(tmp_path / "kf", videos=3, frames=4)  # 9 pairs, 5 batches of 2
    cfg = {"batch_size": 2, "max_new_tokens": 5, "sample": True, "seed": 3}
    local = tmp_path / "local"
    annotate_pairs(pairs, load_backbone(tiny_dir), local, AnnotateConfig(**cfg), progress=False)
    on_ray = tmp_path / "ray"
    ray_cfg = AnnotateConfig(**cfg, engine="ray", ray=RaySettings(actors=2))
    summary = annotate_pairs(pairs, None, on_ray, ray_cfg, progress=False, model_dir=str(tiny_dir))
    assert summary.annotated == 9 and summary.problems == 0
    assert _tree(on_ray) == _tree(local)
    # Killed after three batches: they are kept, the rest is done once.
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "meta.json").write_text((local / "meta.json").read_text())  # a killed run's: written first
    lines = (local / "annotated.jsonl").read_text().splitlines(keepends=True)
    (resumed / "annotated.jsonl").write_text("".join(lines[:6]))
    summary = annotate_pairs(pairs, None, resumed, ray_cfg, progress=False, model_dir=str(tiny_dir))
    assert (summary.done_before, summary.annotated) == (6, 3)
    assert (resumed / "annotated.jsonl").read_bytes() == (local / "annotated.jsonl").read_bytes()


def test_generate_on_ray_writes_what_the_local_run_writes_and_resumes(tmp_path, tiny_dir):
    square_triplets(tmp_path / "data", 7, seed=3)
    manifest = tmp_path / "data" / "manifest.jsonl"

    from worldboot.config import from_dict

    def build(out: Path, **kw) -> GenerateConfig:
        return from_dict(GenerateConfig, {"manifest": str(manifest), "out": str(out), "world": str(tiny_dir),
                                          "verifier": {"path": str(tiny_dir)}, "best_of": 3, "batch_size": 2, **kw})

    local = tmp_path / "local"
    run_generate(build(local), progress=False)
    on_ray = tmp_path / "ray"
    summary = run_generate(build(on_ray, engine="ray", ray={"actors": 2}), progress=False)
    assert summary.predicted == 7 and summary.problems == 0
    assert _tree(on_ray) == _tree(local)
    # A killed run's folder (its first four rows), resumed on Ray: nothing redone or doubled.
    resumed = tmp_path / "resumed"
    shutil.copytree(local, resumed)
    lines = (local / "predictions.jsonl").read_text().splitlines(keepends=True)
    (resumed / "predictions.jsonl").write_text("".join(lines[:4]))
    summary = run_generate(build(resumed, engine="ray", ray={"actors": 2}), progress=False)
    assert (summary.done_before, summary.predicted) == (4, 3)
    assert (resumed / "predictions.jsonl").read_bytes() == (local / "predictions.jsonl").read_bytes()
    assert len(read_rows(resumed / "predictions.jsonl")) == 7


def test_cli_generate_and_annotate_take_the_engine_flags(tmp_path, tiny_dir, capsys):
    square_triplets(tmp_path / "data", 3, seed=1)
    out = tmp_path / "pred"
    args = ["generate", str(tmp_path / "data" / "manifest.jsonl"), "--world", str(tiny_dir), "--out", str(out),
            "--engine", "ray", "--actors", "1", "--no-progress"]
    assert main(args) == 0
    assert len(read_rows(out / "predictions.jsonl")) == 3
    assert "engine ray: 1 actors" in (out / "log.txt").read_text()
    pairs = make_pairs(tmp_path / "kf", videos=1, frames=3)
    ann = tmp_path / "ann"
    assert main(["annotate", str(pairs), "--cdm", str(tiny_dir), "--out", str(ann), "--engine", "ray",
                 "--no-progress"]) == 0
    assert len(read_rows(ann / "annotated.jsonl")) == 2


# -- the engine itself: retries and reports ------------------------------------------------------


def _load(marker: str) -> str:
    return marker


def _die_once(marker: str, job: dict) -> dict:
    """Kill the actor's process the first time job 1 comes (its marker file says it did)."""
    flag = Path(marker) / f"died-{job['n']}"
    if job["n"] == 1 and not flag.exists():
        flag.write_text(str(os.getpid()))
        os._exit(1)
    return {"n": job["n"], "pid": os.getpid()}


def _always_die(marker: str, job: dict) -> dict:
    if job["n"] == 2:
        os._exit(1)
    return {"n": job["n"]}


def test_a_killed_actor_is_restarted_and_its_batch_retried(tmp_path):
    got = []
    outcome = run_jobs([{"n": i} for i in range(4)], _load, _die_once, {"marker": str(tmp_path)},
                       RaySettings(actors=1), lambda job, res: got.append(res["n"]))
    assert outcome.lost == [] and outcome.error is None and sorted(got) == [0, 1, 2, 3]
    assert (tmp_path / "died-1").is_file()  # it did die, once


def _user_mistake(marker: str, job: dict) -> dict:
    if job["n"] == 1:
        raise DataError(f"{marker}/images/x.png is a folder")
    return {"n": job["n"]}


def test_a_user_mistake_met_on_an_actor_stops_the_run_in_one_line_as_without_ray(tmp_path):
    got = []
    with pytest.raises(DataError, match=r"^\S+/images/x.png is a folder$"):  # the cause, not Ray's advice
        run_jobs([{"n": i} for i in range(3)], _load, _user_mistake, {"marker": str(tmp_path)},
                 RaySettings(actors=1), lambda job, res: got.append(res["n"]))
    assert 1 not in got


def test_a_batch_that_never_returns_is_handed_back_not_lost(tmp_path):
    got = []
    outcome = run_jobs([{"n": i} for i in range(4)], _load, _always_die, {"marker": str(tmp_path)},
                       RaySettings(actors=1), lambda job, res: got.append(res["n"]))
    assert sorted(j["n"] for j in outcome.lost) == [n for n in range(4) if n not in got]
    assert 2 in [j["n"] for j in outcome.lost] and outcome.error
    assert outcome.reason("annotated").startswith("not annotated: ")


def test_an_unreachable_cluster_is_one_line_in_seconds(tmp_path, tiny_dir, capsys):
    ray.shutdown()
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=r"cannot reach the Ray cluster at 127\.0\.0\.1:9"):
            start(RaySettings(address="127.0.0.1:9"))
        assert time.monotonic() - t0 < 30
        pairs = make_pairs(tmp_path / "kf", videos=1, frames=3)
        code = main(["annotate", str(pairs), "--cdm", str(tiny_dir), "--out", str(tmp_path / "a"),
                     "--engine", "ray", "--ray-address", "ray://127.0.0.1:9"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and err == ["worldboot annotate: error: cannot reach the Ray cluster at ray://127.0.0.1:9: "
                                     + err[0].split(": ", 3)[-1]], err
        assert json.dumps(err)  # one line
    finally:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)


def test_keyframes_on_ray_resume_a_killed_run(tmp_path):
    """Mining with the ray engine after a kill (one video's result and the pairs file gone):
    the missing video is mined again and the run ends as the local one does."""
    from worldboot.mining.keyframes import KeyframeConfig, mine_videos
    from worldboot.world.gen import generate_clips

    generate_clips(tmp_path / "videos", 3, seed=7, size=96)
    cfg = {"k": 3, "interval": 10}
    local = tmp_path / "local"
    mine_videos(tmp_path / "videos", local, KeyframeConfig(**cfg), progress=False)
    killed = tmp_path / "killed"
    shutil.copytree(local, killed)
    results = sorted((killed / "videos").glob("*.json"))
    assert len(results) == 3
    results[1].unlink()
    (killed / "pairs.jsonl").unlink()
    done = []
    summary = mine_videos(tmp_path / "videos", killed, KeyframeConfig(**cfg, engine="ray"), progress=False,
                          on_result=done.append)
    assert len(done) == 1 and summary.mined == 3  # only the lost video was mined again
    assert _tree(killed) == _tree(local)
