"""CDM annotation of key-frame pairs: rows and scores, resumption, shards, bad input, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import f32_atol, undecodable_png
from worldboot.cli import main
from worldboot.data.schema import read_manifest
from worldboot.errors import ConfigError, DataError
from worldboot.images import open_image
from worldboot.mining.annotate import AnnotateConfig, annotate_pairs
from worldboot.runs import done_ids, parse_shard, shard_of

FAST = {"batch_size": 2, "max_new_tokens": 5}


def make_pairs(root: Path, videos: int = 2, frames: int = 4) -> Path:
    """A keyframes-like run: PNG key-frames and pairs.jsonl with consecutive pairs."""
    rng = np.random.default_rng(0)
    rows = []
    for v in range(videos):
        names = []
        for f in range(frames):
            rel = f"frames/v{v}/{f * 20:06d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(root / rel)
            names.append((f * 20, rel))
        for (fa, a), (fb, b) in zip(names[:-1], names[1:], strict=True):
            rows.append(
                {
                    "id": f"v{v}/{fa:06d}-{fb:06d}",
                    "video": f"class{v}/v{v}.mp4",
                    "label": f"class{v}",
                    "source": a,
                    "target": b,
                    "source_frame": fa,
                    "target_frame": fb,
                    "source_score": 1.0,
                    "target_score": 2.0,
                    "duration": 3.0,
                }
            )
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture()
def pairs(tmp_path) -> Path:
    return make_pairs(tmp_path / "keyframes")


def test_rows_carry_action_and_its_log_likelihood(tiny, pairs, tmp_path):
    out = tmp_path / "annotated"
    summary = annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), progress=False)
    rows = read_jsonl(out / "annotated.jsonl")
    assert summary.annotated == len(rows) == 6 and summary.problems == 0
    assert [r["id"] for r in rows] == [r["id"] for r in read_jsonl(pairs)]
    for row in rows[:2]:
        src, tgt = (open_image(out / row[k]) for k in ("source", "target"))
        codes = tiny.encode_images([src, tgt]).codes
        again = tiny.score([tiny.dynamics_example(codes[0], codes[1], row["action"])])
        total = float(again.total[0])  # one-signed log-probabilities summed: it bounds them (helpers.f32_atol)
        assert row["score_sum"] == pytest.approx(total, abs=f32_atol(abs(total)))
        assert row["n_tokens"] == int(again.count[0]) >= 1
        assert row["score_mean"] == pytest.approx(row["score_sum"] / row["n_tokens"], rel=1e-5)
        assert row["decoding"] == "greedy" and row["label"] == row["video"].split("/")[0]
    # Greedy decoding is deterministic: a second output folder gets the same rows.
    annotate_pairs(pairs, tiny, tmp_path / "again", AnnotateConfig(**FAST), progress=False)
    assert [r["action"] for r in read_jsonl(tmp_path / "again" / "annotated.jsonl")] == [
        r["action"] for r in rows
    ]


def test_crash_and_truncated_line_resume_to_the_clean_output(tiny, pairs, tmp_path):
    """Sampling included: batches are fixed and seeded, so resuming writes what a clean run writes."""
    cfg = AnnotateConfig(**FAST, sample=True, temperature=1.0, seed=3)
    clean = tmp_path / "clean"
    annotate_pairs(pairs, tiny, clean, cfg, progress=False)
    clean_text = (clean / "annotated.jsonl").read_text()
    lines = clean_text.splitlines(keepends=True)
    assert len(lines) == 6

    class Crash(Exception):
        pass

    def crash_after_first_batch(b, rows):
        raise Crash

    run = tmp_path / "run"
    with pytest.raises(Crash):
        annotate_pairs(pairs, tiny, run, cfg, on_batch=crash_after_first_batch, progress=False)
    assert (run / "annotated.jsonl").read_text() == "".join(lines[:2])
    summary = annotate_pairs(pairs, tiny, run, cfg, progress=False)
    assert summary.done_before == 2 and summary.annotated == 4
    assert (run / "annotated.jsonl").read_text() == clean_text

    # Killed in the middle of writing batch 1: one row of it whole, the next cut short.
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / "meta.json").write_text((clean / "meta.json").read_text())  # a killed run's, as RunDir writes it first
    (killed / "annotated.jsonl").write_text("".join(lines[:3]) + lines[3][:25])
    summary = annotate_pairs(pairs, tiny, killed, cfg, progress=False)
    assert summary.done_before == 3 and summary.annotated == 3
    assert (killed / "annotated.jsonl").read_text() == clean_text
    # Nothing left to do: a rerun writes nothing.
    assert annotate_pairs(pairs, tiny, killed, cfg, progress=False).annotated == 0


def test_shards_split_the_work_once(tiny, pairs, tmp_path):
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ConfigError):
            parse_shard(bad)
    out = tmp_path / "annotated"
    ids = [r["id"] for r in read_jsonl(pairs)]
    counts = []
    for i in range(2):
        summary = annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), shard=(i, 2), progress=False)
        counts.append(summary.annotated)
        rows = read_jsonl(out / f"annotated.shard-{i}-of-2.jsonl")
        assert all(shard_of(r["id"], 2) == i for r in rows)
    assert sum(counts) == 6 and all(counts)
    assert done_ids(out.glob("annotated*.jsonl")) == set(ids)
    # Neither a repeated shard nor an unsharded run in the same folder writes a duplicate.
    assert (
        annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), shard=(0, 2), progress=False).annotated == 0
    )
    assert annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), progress=False).annotated == 0
    assert not (out / "annotated.jsonl").read_text()


def test_malformed_pairs_are_reported_by_line(tiny, pairs, tmp_path, capsys):
    good = read_jsonl(pairs)
    broken = dict(good[1], id="ghost", source="frames/nowhere.png")
    lines = [
        json.dumps(good[0]),
        "{not json",
        json.dumps({k: v for k, v in good[1].items() if k != "target"}),
        json.dumps(good[0]),  # the same id again
        json.dumps(broken),
        "[1, 2]",
        json.dumps(good[2]),
    ]
    bad = pairs.with_name("bad.jsonl")
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "annotated"
    summary = annotate_pairs(bad, tiny, out, AnnotateConfig(**FAST), progress=False)
    assert summary.annotated == 2 and summary.problems == 5
    problems = {p["line"]: p["reason"] for p in read_jsonl(out / "problems.jsonl")}
    assert set(problems) == {2, 3, 4, 5, 6}
    assert problems[2].startswith("malformed JSON")
    assert problems[3] == "missing field: target"
    assert problems[4] == f"duplicate id: {good[0]['id']}"
    assert problems[5].startswith("image not found:") and "nowhere.png" in problems[5]
    assert problems[6] == "malformed JSON: not an object"
    with pytest.raises(DataError, match=r"bad.jsonl:2: malformed JSON"):
        annotate_pairs(bad, tiny, tmp_path / "strict", AnnotateConfig(**FAST, strict=True), progress=False)
    # An image that exists but is not an image: reported when the batch is read.
    (pairs.parent / good[3]["target"]).write_text("not a png")
    summary = annotate_pairs(pairs, tiny, tmp_path / "unreadable", AnnotateConfig(**FAST), progress=False)
    reasons = [p["reason"] for p in read_jsonl(tmp_path / "unreadable" / "problems.jsonl")]
    assert summary.annotated == 4 and len(reasons) == 2 and all("cannot read image" in r for r in reasons)


def test_strict_stops_after_the_batchs_finished_rows_are_written(tiny, pairs, tmp_path):
    """An image that fails only when its pixels are read stops a --strict run; the rows of its
    batch already annotated are on disk, and the rerun does not annotate them again."""
    rows = read_jsonl(pairs)
    undecodable_png(pairs.parent / rows[3]["target"])  # pair 3's target, batch 1 (pairs 2 and 3)
    out = tmp_path / "annotated"
    with pytest.raises(DataError, match=r"pairs.jsonl:4: cannot read image"):
        annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST, strict=True), progress=False)
    assert [r["id"] for r in read_jsonl(out / "annotated.jsonl")] == [r["id"] for r in rows[:3]]
    summary = annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), progress=False)
    assert summary.done_before == 3 and summary.annotated == 1


def test_a_rerun_with_other_decoding_or_another_cdm_is_refused(tiny_dir, pairs, tmp_path, capsys):
    """Rows made greedily by one CDM are never kept under settings or a model that say otherwise."""
    out = tmp_path / "annotated"
    base = ["annotate", str(pairs), "--out", str(out), "--batch-size", "2", "--max-new-tokens", "5", "--no-progress"]
    assert main([*base, "--cdm", str(tiny_dir)]) == 0
    before = (out / "annotated.jsonl").read_bytes()
    assert main([*base, "--cdm", str(tiny_dir), "--sample", "--temperature", "0.7"]) == 2
    assert "holds annotated rows made with sample=False, not True" in capsys.readouterr().err
    other = tmp_path / "other-cdm"
    shutil.copytree(tiny_dir, other)
    assert main([*base, "--cdm", str(other)]) == 2
    assert f"holds rows annotated by the CDM {tiny_dir.resolve()}, not {other}" in capsys.readouterr().err
    assert (out / "annotated.jsonl").read_bytes() == before
    assert main([*base, "--cdm", str(tiny_dir)]) == 0  # the same settings and CDM resume
    assert (out / "annotated.jsonl").read_bytes() == before


def test_cli_annotate_then_select(tiny_dir, pairs, tmp_path, capsys):
    # The annotations away from the key-frames: select checks the images against the folder
    # annotate checked them against (its meta.json), not the annotations' parent.
    out, synth = tmp_path / "elsewhere" / "deep" / "annotated", tmp_path / "synthetic"
    args = ["annotate", str(pairs), "--cdm", str(tiny_dir), "--out", str(out), "--batch-size", "3"]
    assert main([*args, "--max-new-tokens", "4", "--no-progress"]) == 0
    assert len(read_jsonl(out / "annotated.jsonl")) == 6
    assert "6 annotated now" in " ".join(capsys.readouterr().err.split())
    assert json.loads((out / "meta.json").read_text())["data_root"] == str(pairs.resolve().parent)
    assert (
        main(["annotate", str(pairs), "--cdm", str(tiny_dir), "--out", str(out), "--temperature", "0.5"]) == 2
    )
    assert "--sample" in capsys.readouterr().err
    assert main(["select", str(out), "--k", "4", "--out", str(synth), "--name", "toy"]) == 0
    rows = read_jsonl(out / "annotated.jsonl")
    nonempty = [r for r in rows if r["action"].strip()]
    triplets = read_manifest(synth / "synthetic.jsonl")
    assert len(triplets) == min(4, len(nonempty))
    assert all(
        t.subset == "synthetic/toy" and Path(t.source).is_file() and Path(t.target).is_file()
        for t in triplets
    )


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launch_shards_by_rank(tiny_dir, pairs, tmp_path):
    if shutil.which("accelerate", path=os.path.dirname(sys.executable)) is None:
        pytest.skip("accelerate launcher not installed")
    out = tmp_path / "annotated"
    cmd = [
        os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
        "-m", "worldboot.cli", "annotate", str(pairs), "--cdm", str(tiny_dir), "--out", str(out),
        "--batch-size", "2", "--max-new-tokens", "3", "--no-progress",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p.name for p in out.glob("annotated*.jsonl"))
    assert files == ["annotated.shard-0-of-2.jsonl", "annotated.shard-1-of-2.jsonl"]
    assert done_ids(out.glob("annotated*.jsonl")) == {r["id"] for r in read_jsonl(pairs)}


def test_pairs_outside_the_key_frames_folder_are_skipped_and_counted(tiny, pairs, tmp_path):
    secret = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(secret)
    rows = read_jsonl(pairs)
    rows.append(rows[0] | {"id": "evil", "source": "../secret.png"})
    rows.append(rows[1] | {"id": "abs", "target": str(secret)})
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "annotated"
    summary = annotate_pairs(pairs, tiny, out, AnnotateConfig(**FAST), progress=False)
    assert summary.annotated == 6 and summary.problems == 2
    problems = read_jsonl(out / "problems.jsonl")
    assert [p["line"] for p in problems] == [7, 8] and all("escapes the data root" in p["reason"] for p in problems)
    # A root that holds both lets them through.
    wide = annotate_pairs(pairs, tiny, tmp_path / "wide", AnnotateConfig(**FAST, root=str(tmp_path)), progress=False)
    assert wide.annotated == 8 and wide.problems == 0
