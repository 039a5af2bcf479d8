"""``worldboot data inspect|convert`` and ``worldboot tokenize`` from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldboot.cli import main
from worldboot.data.aurora import load_aurora_bench
from worldboot.data.cache import TokenCache
from worldboot.data.formats import detect_format
from worldboot.data.schema import read_manifest
from worldboot.errors import DataError


@pytest.mark.parametrize("path", [["data"], ["data", "inspect"], ["data", "convert"], ["tokenize"]])
def test_help_has_an_example(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def _entry_line(test_json: Path) -> dict[str, int]:
    """Something-Something id -> the line its entry's "{" is on (the id is the entry's first key)."""
    text = test_json.read_text().splitlines()
    return {m.group(1): n - 1 for n, line in enumerate(text, start=1)
            if (m := re.fullmatch(r'\s*"id": "(\d+)",', line)) and text[n - 2].strip() == "{"}


def test_inspect_real_bench_counts_and_problem_lines(aurora_bench: Path, capsys):
    test_json = aurora_bench / "test.json"
    assert main(["data", "inspect", str(test_json)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") >= 4}
    assert rows["kubric"].split("│")[2].strip() == "50"
    assert rows["something"].split("│")[2].strip() == "48"
    at = _entry_line(test_json)
    assert f"{test_json}:{at['214831']}: missing target image: data/something/images/214831/last.jpg" in out
    assert f"{test_json}:{at['213316']}: missing target image: data/something/images/213316/last.jpg" in out
    assert main(["data", "inspect", str(test_json), "--strict"]) == 2
    assert main(["data", "inspect", str(test_json), "--strict", "--task", "kubric"]) == 0


def test_inspect_user_errors_are_one_line(tmp_path: Path, capsys):
    assert main(["data", "inspect", str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "file not found" in err and "Traceback" not in err


def test_convert_writes_a_manifest_the_pipeline_reads(aurora_bench: Path, tmp_path: Path, capsys):
    out = tmp_path / "bench.jsonl"
    problems = tmp_path / "problems.jsonl"
    code = main(
        ["data", "convert", str(aurora_bench / "test.json"), "--out", str(out), "--problems", str(problems)]
    )
    assert code == 0
    assert "--root /" in capsys.readouterr().out  # images lie outside the manifest's folder
    back = read_manifest(out, root="/")
    original = load_aurora_bench(aurora_bench / "test.json")
    assert [(t.id, t.source, t.action, t.target, t.meta) for t in back] == [
        (t.id, t.source, t.action, t.target, t.meta) for t in original
    ]
    at = _entry_line(aurora_bench / "test.json")
    assert [json.loads(line)["line"] for line in problems.read_text().splitlines()] == [at["214831"], at["213316"]]
    strict_out = tmp_path / "strict.jsonl"
    assert (
        main(["data", "convert", str(aurora_bench / "test.json"), "--out", str(strict_out), "--strict"]) == 2
    )
    assert not strict_out.exists()


def test_detect_format(tmp_path: Path):
    (tmp_path / "m.jsonl").write_text("")
    (tmp_path / "a.csv").write_text("video,start_frame,stop_frame,narration\n")
    (tmp_path / "test.json").write_text(
        json.dumps([{"input": "x", "task": "ag"}, {"input": "y", "task": "kubric"}])
    )
    (tmp_path / "train.json").write_text(json.dumps([{"input": "x", "instruction": "y", "output": "z"}]))
    (tmp_path / "x.txt").write_text("")
    assert [detect_format(tmp_path / n) for n in ("m.jsonl", "a.csv", "test.json", "train.json")] == [
        "jsonl",
        "epic",
        "aurora-bench",
        "aurora-train",
    ]
    with pytest.raises(DataError, match="pass --format"):
        detect_format(tmp_path / "x.txt")


def test_tokenize_builds_a_cache_and_reports_problems(tiny_dir: Path, tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    for name in ("a", "b", "c"):
        Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    rows = [
        {"id": "1", "subset": "s", "source": "a.png", "action": "push", "target": "b.png"},
        {"id": "2", "subset": "s", "source": "b.png", "action": "pull", "target": "c.png"},
        {"id": "3", "subset": "s", "source": "c.png", "action": "lift", "target": "gone.png"},
        {"id": "4", "subset": "s", "source": "c.png", "action": "drop"},
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cache"
    args = ["tokenize", str(manifest), "--backbone", str(tiny_dir), "--out", str(out), "--batch-size", "2"]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 triplets, 3 distinct images" in err and "no target: 1" in err
    cache = TokenCache(out)
    assert cache.ids == ["1", "2"] and cache.index["batch_size"] == 2
    assert [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()] == [
        {"file": str(manifest), "line": 3, "reason": "missing target image: gone.png"}
    ]
    assert main(["tokenize", str(manifest), "--backbone", str(tmp_path / "no-model"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "model directory not found" in err and "Traceback" not in err
