"""Stratified top-K selection (the paper's Algorithm 1), statistics, plot and the synthetic manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from worldboot.cli import main
from worldboot.data.schema import Problems, read_manifest
from worldboot.errors import DataError, UsageError
from worldboot.mining.select import SelectConfig, read_annotated, select_synthetic, stratified_top_k
from worldboot.mining.select_stats import dataset_stats

# (id, class, score): class B has one item, A three, C four.
ITEMS = [
    ("a3", "A", 0.1),
    ("c2", "C", 0.4),
    ("a1", "A", 0.9),
    ("b1", "B", 0.95),
    ("c4", "C", 0.2),
    ("c1", "C", 0.5),
    ("a2", "A", 0.8),
    ("c3", "C", 0.3),
]


def pick(k, **kw):
    return [i[0] for i in stratified_top_k(ITEMS, k, score=lambda i: i[2], label=lambda i: i[1], **kw)]


def test_algorithm_1_hand_worked():
    # Round 1: A a1, B b1, C c1. Round 2: A a2, B has run out (passed over), C c2.
    # Round 3: A a3 -> K = 6 reached mid-round.
    assert pick(6) == ["a1", "b1", "c1", "a2", "c2", "a3"]
    # K = 8: round 3 ends with c3; in round 4 only C has items left.
    assert pick(8) == ["a1", "b1", "c1", "a2", "c2", "a3", "c3", "c4"]
    # K beyond the items: every item once, then stop (all classes exhausted).
    assert pick(100) == ["a1", "b1", "c1", "a2", "c2", "a3", "c3", "c4"]
    # Stratified, not the global top-3 (which is b1, a1, a2).
    assert pick(3) == ["a1", "b1", "c1"]
    assert pick(1) == ["a1"]
    # Another round-robin order.
    assert pick(4, class_order=["C", "B", "A"]) == ["c1", "b1", "a1", "c2"]
    with pytest.raises(ValueError, match="lacks classes"):
        pick(4, class_order=["A", "B"])
    assert stratified_top_k([], 5, score=lambda i: 0, label=lambda i: "x") == []


def test_ties_keep_input_order():
    items = [("x", "A", 1.0), ("y", "A", 1.0), ("z", "B", 1.0)]
    got = stratified_top_k(items, 3, score=lambda i: i[2], label=lambda i: i[1])
    assert [i[0] for i in got] == ["x", "z", "y"]


def write_annotated(root: Path, rows: list[dict]) -> Path:
    rng = np.random.default_rng(0)
    out = root / "annotated"
    out.mkdir(parents=True)
    for r in rows:
        for key in ("source", "target"):
            path = root / "keyframes" / r[key]
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(path)
            r[key] = f"../keyframes/{r[key]}"
    (out / "annotated.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def row(
    video: int, s: int, t: int, label: str, action: str, mean: float, n_tokens: int, duration: float = 4.0
):
    return {
        "id": f"v{video}/{s:06d}-{t:06d}",
        "video": f"{label}/v{video}.mp4",
        "label": label,
        "source": f"frames/v{video}/{s:06d}.png",
        "target": f"frames/v{video}/{t:06d}.png",
        "source_frame": s,
        "target_frame": t,
        "duration": duration,
        "action": action,
        "score_mean": mean,
        "score_sum": mean * n_tokens,
        "n_tokens": n_tokens,
        "decoding": "greedy",
    }


@pytest.fixture()
def annotated(tmp_path) -> Path:
    rows = [
        row(0, 0, 20, "push", "push the cup", -1.0, 4, 3.0),
        row(0, 20, 40, "push", "push it left", -0.5, 4, 3.0),
        row(0, 40, 60, "push", "push the red cup to the left", -0.6, 8, 3.0),
        row(1, 5, 30, "pull", "pull", -2.0, 2, 5.0),
        row(2, 0, 25, "pull", "pull the drawer open", -1.5, 5, 7.0),
    ]
    return write_annotated(tmp_path, rows)


def test_dataset_stats_match_hand_counts(annotated):
    rows = read_annotated(annotated, Problems())
    stats = dataset_stats(rows)
    assert stats["videos"] == 3 and stats["samples"] == 5 and stats["classes"] == 2
    assert stats["avg_opv"] == pytest.approx((4 + 2 + 2) / 3)
    assert stats["avg_apv"] == pytest.approx(5 / 3)
    assert stats["avg_wpa"] == pytest.approx((3 + 3 + 7 + 1 + 4) / 5)
    assert stats["avg_length_s"] == pytest.approx(5.0) and stats["total_length_h"] == pytest.approx(15 / 3600)
    assert stats["per_class"] == {"pull": 2, "push": 3}


def test_select_writes_a_training_manifest_with_stats_and_plot(annotated, tmp_path):
    out = tmp_path / "synthetic"
    summary = select_synthetic(annotated, out, SelectConfig(k=3, name="toy"))
    assert summary.selected == 3 and summary.rows == 5 and summary.classes == 2
    triplets = read_manifest(out / "synthetic.jsonl", Problems(strict=True))
    # mean score: push ranks v0/20-40 (-0.5), v0/40-60 (-0.6), v0/0-20; pull ranks v2 (-1.5), v1.
    assert [t.id for t in triplets] == ["v2/000000-000025", "v0/000020-000040", "v1/000005-000030"]
    first = triplets[0]
    assert first.subset == "synthetic/toy" and first.action == "pull the drawer open"
    assert Path(first.source).is_file() and out in Path(first.source).parents
    assert first.meta["class"] == "pull" and first.meta["score"] == pytest.approx(-1.5)
    assert first.meta["video"] == "pull/v2.mp4" and first.meta["frames"] == [0, 25]
    raw = [json.loads(line) for line in (out / "synthetic.jsonl").read_text().splitlines()]
    assert all(not Path(r["source"]).is_absolute() for r in raw)  # portable: relative to SYNTH_DIR
    stats = json.loads((out / "stats.json").read_text())
    assert stats["selected"]["samples"] == 3 and stats["annotated"]["samples"] == 5
    assert stats["selected"]["per_class"] == {"pull": 2, "push": 1}
    table = (out / "stats.md").read_text()
    assert "| set | videos | avg. length" in table and "| push | 3 | 1 |" in table
    with Image.open(out / "scores_by_class.png") as img:
        assert img.format == "PNG" and img.width > 300
    # By the sum, long actions lose: push's best is now v0/20-40 (-2.0) and v0/0-20 (-4.0).
    by_sum = select_synthetic(annotated, tmp_path / "by_sum", SelectConfig(k=4, score="sum"))
    ids = [t.id for t in read_manifest(Path(by_sum.manifest))]
    assert ids == ["v1/000005-000030", "v0/000020-000040", "v2/000000-000025", "v0/000000-000020"]
    # A rerun with a smaller K leaves no image of the earlier selection behind.
    select_synthetic(annotated, out, SelectConfig(k=1, name="toy"))
    assert len(list((out / "images").rglob("*.png"))) == 2


def test_select_never_removes_images_it_did_not_write(annotated, tmp_path, capsys):
    out = tmp_path / "mydata"
    (out / "images" / "holiday").mkdir(parents=True)
    (out / "images" / "holiday" / "photo.jpg").write_bytes(b"keep me")
    with pytest.raises(UsageError, match="images exists and is not from an earlier worldboot select"):
        select_synthetic(annotated, out, SelectConfig(k=3))
    assert (out / "images" / "holiday" / "photo.jpg").read_bytes() == b"keep me"
    assert not (out / "meta.json").exists()
    # The annotate run's own folder: refused before its meta and problems are replaced.
    (annotated / "meta.json").write_text(json.dumps({"stage": "annotate"}))
    (annotated / "problems.jsonl").write_text('{"file": "x", "line": 1, "reason": "r"}\n')
    assert main(["select", str(annotated), "--k", "3", "--out", str(annotated)]) == 2
    assert "holds a run of annotate" in capsys.readouterr().err
    assert (annotated / "problems.jsonl").read_text().count("\n") == 1


def test_bad_rows_are_reported_and_skipped(annotated, tmp_path):
    path = annotated / "annotated.jsonl"
    good = [json.loads(line) for line in path.read_text().splitlines()]
    extra = [
        "{broken",
        json.dumps(dict(good[0], id="empty", action="  ")),
        json.dumps(dict(good[0], id="nan", score_mean=float("nan"))),
        json.dumps({k: v for k, v in good[0].items() if k != "score_sum"} | {"id": "nosum"}),
        json.dumps(good[1]),  # repeated id
        json.dumps(dict(good[0], id="huge")).replace(f'"score_mean": {json.dumps(good[0]["score_mean"])}',
                                                      '"score_mean": ' + "9" * 400),  # no float holds it
        json.dumps(dict(good[0], id="when", duration="long")),
        json.dumps(dict(good[0], id="inf", duration=float("inf"))),
    ]
    path.write_text(path.read_text() + "\n".join(extra) + "\n")
    out = tmp_path / "synthetic"
    summary = select_synthetic(annotated, out, SelectConfig(k=10))
    assert summary.rows == 5 and summary.problems == 8 and summary.selected == 5
    reasons = {
        p["line"]: p["reason"] for p in map(json.loads, (out / "problems.jsonl").read_text().splitlines())
    }
    assert reasons[6].startswith("malformed JSON") and reasons[7] == "empty action"
    assert reasons[8] == "score is not a finite number" and reasons[9] == "missing field: score_sum"
    assert reasons[10] == f"duplicate id: {good[1]['id']}"
    assert reasons[11] == "score is not a finite number" and reasons[12] == "field 'duration' must be a number, got str"
    assert reasons[13] == "duration is not a finite number"
    with pytest.raises(DataError, match=r"annotated.jsonl:6: malformed JSON"):
        select_synthetic(annotated, tmp_path / "strict", SelectConfig(strict=True))


def test_a_plot_of_no_class_is_refused(annotated, tmp_path, capsys):
    assert main(["select", str(annotated), "--k", "3", "--plot-classes", "-1", "--out", str(tmp_path / "s")]) == 2
    assert "plot_classes must be at least 1, got -1" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_missing_input_is_one_line(tmp_path, capsys):
    assert main(["select", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0]
    (tmp_path / "emptydir").mkdir()
    assert main(["select", str(tmp_path / "emptydir"), "--out", str(tmp_path / "o")]) == 2
    assert "no annotated*.jsonl" in capsys.readouterr().err


def test_images_outside_the_data_root_or_missing_are_skipped_and_counted(annotated, tmp_path):
    """A row naming ``../../../../etc/passwd`` (or any file outside the mining run) is never
    copied into the dataset; a missing image skips its row, and the rest is selected."""
    secret = tmp_path.parent / "secret.txt"
    secret.write_text("do not copy")
    lines = (annotated / "annotated.jsonl").read_text().splitlines()
    evil = json.loads(lines[0]) | {"id": "evil", "source": "../../../secret.txt"}
    gone = json.loads(lines[1]) | {"id": "gone", "target": "../keyframes/frames/v9/000000.png"}
    absolute = json.loads(lines[2]) | {"id": "abs", "target": str(secret)}
    (annotated / "annotated.jsonl").write_text("\n".join([*lines, *map(json.dumps, (evil, gone, absolute))]) + "\n")
    out = tmp_path / "synthetic"
    summary = select_synthetic(annotated, out, SelectConfig(k=8, name="toy"))
    assert summary.selected == 5 and summary.problems == 3
    reasons = [json.loads(x)["reason"] for x in (out / "problems.jsonl").read_text().splitlines()]
    assert sum("escapes the data root" in r for r in reasons) == 2 and sum("not found" in r for r in reasons) == 1
    assert all(json.loads(x)["line"] in (6, 7, 8) for x in (out / "problems.jsonl").read_text().splitlines())
    copied = [p.read_bytes() for p in (out / "images").rglob("*") if p.is_file()]
    assert b"do not copy" not in copied
    with pytest.raises(DataError, match="annotated.jsonl:6: source image path escapes"):
        select_synthetic(annotated, tmp_path / "strict", SelectConfig(k=8, name="toy", strict=True))
