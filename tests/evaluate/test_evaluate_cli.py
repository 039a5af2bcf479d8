"""``worldboot evaluate``: verbs and parsing, the whole report on a small benchmark with the fake
judge server, Copy and best-of-N baselines, bad input, the key's secrecy, presets, spatial
multiple choice on the tiny model, and the score-vs-K plot."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fakes.openai_server import FakeOpenAI, error
from helpers import f32_atol, square_triplets, undecodable_png
from worldboot.cli import build_parser, main, subcommand_names
from worldboot.config import load_config
from worldboot.errors import DataError
from worldboot.evaluate.predictions import read_predictions
from worldboot.evaluate.run import EvaluateConfig, run_evaluation

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"
KEY = "sk-test-SENTINEL-fedcba9876543210"
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "evaluate"


@pytest.fixture()
def bench(tmp_path):
    """Six square triplets in two subsets, a manifest, and two models' predictions."""
    triplets = square_triplets(tmp_path / "bench", 6, seed=3)
    manifest = tmp_path / "bench" / "manifest.jsonl"
    # Model "perfect": predictions.jsonl whose image is the target; three candidates each
    # (the source, the target, noise) with dynamics scores preferring the target.
    perfect = tmp_path / "perfect"
    (perfect / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for t in triplets:
        cands = []
        for ci, (src, cdm) in enumerate(((t.source, -9.0), (t.target, -1.0), (None, -5.0))):
            p = perfect / "images" / f"{t.id}_c{ci}.png"
            if src is None:
                Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(p)
            else:
                shutil.copy(src, p)
            cands.append({"image": f"images/{t.id}_c{ci}.png", "score": cdm})
        shutil.copy(t.target, perfect / "images" / f"{t.id}.png")
        rows.append({"id": t.id, "image": f"images/{t.id}.png", "seed": 0, "candidates": cands, "chosen": 1})
    (perfect / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Model "editor": a plain folder of images by id, one missing, one twice the size.
    editor = tmp_path / "editor"
    editor.mkdir()
    for t in triplets[1:]:
        img = Image.open(t.target)
        if t.id == triplets[2].id:
            img = img.resize((128, 128), Image.NEAREST)
        img.save(editor / f"{t.id}.png")
    return {"triplets": triplets, "manifest": manifest, "perfect": perfect, "editor": editor, "tmp": tmp_path}


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("verb", [[], ["run"], ["actions"], ["spatial"], ["plot"]])
def test_help_of_every_verb(verb, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", *verb, "--help"])
    assert exc.value.code == 0
    assert "example" in capsys.readouterr().out


def test_default_verb_is_run_with_options_anywhere():
    parser = build_parser()
    a = parser.parse_args(["evaluate", "P1", "--bench", "b.jsonl", "--pred", "X=P2"])
    b = parser.parse_args(["evaluate", "--bench", "b.jsonl", "P1", "--judge", "none"])
    c = parser.parse_args(["evaluate", "--pred", "X=P2", "--bench", "b.jsonl", "--out", "o"])
    for ns in (a, b, c):
        assert ns.verb == "run" and ns.bench == "b.jsonl"
    assert a.preds == ["P1"] and a.named_preds == ["X=P2"] and b.judge_type == "none" and c.preds == []
    assert parser.parse_args(["evaluate", "actions", "a.jsonl", "--bench", "b"]).verb == "actions"
    assert ["evaluate", "run"] in subcommand_names(parser)


def test_no_arguments_prints_help(capsys):
    assert main(["evaluate"]) == 2
    assert "VERB" in capsys.readouterr().out


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_presets_load(preset):
    text = (CONFIGS / preset).read_text()
    assert text.startswith("#") and "worldboot evaluate" in text.splitlines()[0]
    cls = EvaluateConfig
    if "actions" in preset:
        from worldboot.evaluate.actions import ActionsConfig as cls
    elif "spatial" in preset:
        from worldboot.evaluate.spatial import SpatialConfig as cls
    load_config(cls, CONFIGS / preset)


# -- the report ----------------------------------------------------------------------------------


def test_full_report_with_judge_baselines_and_bad_input(bench, monkeypatch, capsys, caplog):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    out = bench["tmp"] / "report"
    with FakeOpenAI() as server:
        code = main([
            "evaluate", str(bench["perfect"]), "--pred", f"GoT={bench['editor']}", "--bench", str(bench["manifest"]),
            "--out", str(out), "--judge", "openai", "--judge.base-url", server.url, "judge.max_retries=0",
        ])
        calls = server.count
    assert code == 0
    printed = capsys.readouterr()
    n = len(bench["triplets"])
    subsets = sorted({t.subset for t in bench["triplets"]})
    # the judge saw: Copy 6 + perfect 6 + editor 5 (one missing), candidates 18, deduplicated by pixels
    assert 0 < calls <= 6 + 6 + 5 + 18

    rows = _rows(out)
    models = ["Copy", "perfect", "perfect +Best-of-3", "GoT"]
    assert sorted({r["model"] for r in rows}) == sorted(models) and len(rows) == 4 * n
    by = {(r["model"], r["id"]): r for r in rows}
    for t in bench["triplets"]:
        assert by[("Copy", t.id)]["judge_score"] == 0.0  # the fake judge gives identical images 0
        assert by[("perfect", t.id)]["judge_score"] == 7.0
        assert by[("perfect", t.id)]["l1"] == 0.0  # the prediction is the target
        assert by[("Copy", t.id)]["l1"] > 0.0
        oracle = by[("perfect +Best-of-3", t.id)]
        assert oracle["candidate"] == 1 and oracle["judge_score"] == 7.0  # first of the best
        assert [c["judge_score"] for c in by[("perfect", t.id)]["candidates"]] == [0.0, 7.0, 7.0]
    missing = by[("GoT", bench["triplets"][0].id)]
    assert missing["status"] == "missing" and missing["judge_score"] is None
    resized = by[("GoT", bench["triplets"][2].id)]
    assert resized["status"] == "ok" and resized["l1"] < 0.02  # resized to the common size for L1

    table = json.loads((out / "table.json").read_text())
    assert table["models"] == models and sorted(table["subsets"]) == subsets
    judge = table["metrics"]["judge_score"]["values"]
    assert judge["Copy"]["Avg."]["mean"] == 0.0 and judge["perfect"]["Avg."]["mean"] == 7.0
    got = judge["GoT"]
    assert sum(got[s]["scored"] for s in subsets) == n - 1 and got["Avg."]["total"] == n
    assert "clip_i" not in table["metrics"] and "dino" not in table["metrics"]
    assert table["judge"]["usage"]["paid_calls"] == calls and table["judge"]["usage"]["cost"] > 0
    md = (out / "table.md").read_text()
    assert md == printed.out
    assert "CLIP-I and CLIP-T skipped" in md and "DINO skipped" in md
    assert f"{n - 1}/{n}" in md and "ES / ME breakdown" in md and "1 of 6 samples have no prediction" in md
    csv_lines = (out / "table.csv").read_text().splitlines()
    assert csv_lines[0].startswith("metric,model,") and any(line.startswith("judge_score,Copy,") for line in csv_lines)
    ver = [json.loads(line) for line in (out / "verification.jsonl").read_text().splitlines()]
    assert {r["k"] for r in ver} == {1, 2} and (out / "verification.png").stat().st_size > 0
    # Among any two of (source -9, target -1, noise -5) the dynamics model never picks the source
    # (judged 0), so K=2 always scores 7; K=1 picks at random and can score less.
    assert all(r["score"] == 7.0 for r in ver if r["k"] == 2)
    assert all(0.0 <= r["score"] <= 7.0 for r in ver if r["k"] == 1)
    for name in ("config.yaml", "meta.json", "log.txt", "judge_cache.sqlite"):
        assert (out / name).is_file()

    # The key never reaches a file, the console or a log record.
    for path in out.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert KEY not in printed.out + printed.err
    assert KEY not in caplog.text and all(KEY not in str(r.args) for r in caplog.records)

    # A rerun pays nothing: every verdict comes from the cache.
    with FakeOpenAI() as server:
        assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                     "--judge.base-url", server.url]) == 0
        assert server.count == 0
    assert json.loads((out / "table.json").read_text())["judge"]["usage"]["paid_calls"] == 0


def test_judge_down_is_reported_per_sample(bench, monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    out = bench["tmp"] / "down"
    with FakeOpenAI(default=lambda body: error(500, "down")) as server:
        code = main(["evaluate", str(bench["editor"]), "--bench", str(bench["manifest"]), "--out", str(out),
                     "--judge.base-url", server.url, "judge.max_retries=0"])
        assert server.count > 0
    assert code == 0
    rows = _rows(out)
    judged = [r for r in rows if r["prediction"]]
    assert all(r["judge_score"] is None and r["status"] == "error" for r in judged)
    assert all(any("judge unavailable" in e for e in r["errors"]) for r in judged)
    assert all(r["l1"] is not None for r in judged)  # the other metrics still count
    md = capsys.readouterr().out
    assert "Scored samples (Judge score" in md and "| editor | 0/2 | 0/4 | 0/6 |" in md
    assert "| editor | – | – | – |" in md  # the judge's table is shown, empty
    assert json.loads((out / "table.json").read_text())["metrics"]["judge_score"]["values"]["editor"]["Avg."]["scored"] == 0


def test_judge_none_skips_judge_and_oracle(bench, capsys):
    out = bench["tmp"] / "none"
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "none"]) == 0
    table = json.loads((out / "table.json").read_text())
    assert table["models"] == ["Copy", "perfect"] and "judge_score" not in table["metrics"]
    assert table["metrics"]["l1"]["values"]["perfect"]["Avg."]["mean"] == 0.0
    assert "Judge skipped" in capsys.readouterr().out and not (out / "verification.jsonl").exists()


def test_missing_key_and_bad_paths_fail_in_one_line(bench, monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = bench["tmp"] / "r"
    args = ["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "OPENAI_API_KEY" in err and len(err.strip().splitlines()) == 1
    assert main(["evaluate", "nope", "--bench", str(bench["manifest"]), "--out", str(out), "--judge", "none"]) == 2
    assert "predictions directory not found: nope" in capsys.readouterr().err
    assert main(["evaluate", "--bench", "missing.jsonl", "--out", str(out), "--judge", "none"]) == 2
    assert "benchmark not found" in capsys.readouterr().err
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "none", "judge.nope=1"]) == 2
    assert "unknown config key 'judge.nope'" in capsys.readouterr().err
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--clip", str(bench["tmp"] / "no-clip")]) == 2  # checked before the judge spends anything
    assert "CLIP model directory" in capsys.readouterr().err
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "none", "--max-per-subset", "-1"]) == 2
    assert "max_per_subset must be 0 (all) or more, got -1" in capsys.readouterr().err
    assert not out.exists()  # nothing written for a user mistake


def test_bad_prediction_lines_are_counted_or_strict(bench, capsys):
    pred = bench["perfect"] / "predictions.jsonl"
    lines = pred.read_text().splitlines()
    lines[1] = "{not json"
    lines.append(json.dumps({"id": "x", "image": "../../escape.png"}))
    pred.write_text("\n".join(lines) + "\n")
    out = bench["tmp"] / "bad"
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "none"]) == 0
    problems = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert [p["line"] for p in problems] == [2, 7]
    assert "malformed JSON" in problems[0]["reason"] and "escapes" in problems[1]["reason"]
    assert "2 input problems skipped" in capsys.readouterr().out
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "none", "--strict"]) == 2
    assert "predictions.jsonl:2: malformed JSON" in capsys.readouterr().err


def test_unreadable_prediction_images_are_problems_of_their_line_or_strict(bench, capsys):
    """An image the predictions list that is empty, cut short, not an image, gone or not a file
    is a problem of its line, counted in a note and not scored; --strict stops before any judge."""
    perfect, ids = bench["perfect"], [t.id for t in bench["triplets"]]
    (perfect / "images" / f"{ids[0]}.png").write_bytes(b"")
    cut = perfect / "images" / f"{ids[1]}.png"
    cut.write_bytes(cut.read_bytes()[:60])
    (perfect / "images" / f"{ids[2]}.png").write_text("not an image")
    (perfect / "images" / f"{ids[3]}.png").unlink()
    undecodable_png(perfect / "images" / f"{ids[4]}.png")
    out = bench["tmp"] / "report"
    assert main(["evaluate", str(perfect), "--bench", str(bench["manifest"]), "--out", str(out), "--judge", "none"]) == 0
    problems = [json.loads(x) for x in (out / "problems.jsonl").read_text().splitlines()]
    assert [(p["file"], p["line"]) for p in problems] == [(str(perfect / "predictions.jsonl"), n) for n in range(1, 6)]
    assert [p["reason"].split(":")[0] for p in problems] == ["unreadable prediction image"] * 3 + [
        "missing prediction image", "unreadable prediction image"]
    assert "5 of 6 prediction images cannot be read" in capsys.readouterr().out.replace("\n", " ")
    rows = {r["id"]: r for r in _rows(out) if r["model"] == "perfect"}
    assert [rows[i]["status"] for i in ids] == ["missing"] * 5 + ["ok"] and rows[ids[5]]["l1"] == 0.0
    assert main(["evaluate", str(perfect), "--bench", str(bench["manifest"]), "--out", str(bench["tmp"] / "strict"),
                 "--judge", "none", "--strict"]) == 2
    assert "predictions.jsonl:1: unreadable prediction image" in capsys.readouterr().err
    assert not (bench["tmp"] / "strict").exists()


def test_a_bench_with_no_usable_sample_says_why(bench, capsys):
    bad = bench["tmp"] / "BENCH.JSON"  # upper case: still AURORA's JSON
    bad.write_text(json.dumps([{"input": "a.png", "instruction": " ", "task": "ag"}]))
    assert main(["evaluate", str(bench["perfect"]), "--bench", str(bad), "--out", str(bench["tmp"] / "r"),
                 "--judge", "none"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}: no usable sample; 1 problem(s), the first: {bad}:1: empty action" in err


def test_folder_predictions_keyed_by_id(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "kubric").mkdir()
    for rel in ("a.png", "images/b.jpg", "kubric/c.webp"):
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    from worldboot.data.schema import Problems

    # A write a kill cut short (worldboot.runs.atomic_path's hidden name) and a tool's folder
    # are no predictions.
    for rel in ("images/.d.tmp123.png", ".git/e.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        Image.new("RGB", (8, 8)).save(tmp_path / rel)
    preds = read_predictions(tmp_path, Problems())
    assert {"a", "b", "images/b", "kubric/c", "c"} == set(preds)  # c: the name alone, in a subset's folder
    Image.new("RGB", (8, 8)).save(tmp_path / "kubric" / "a.png")  # a second "a": only its path keys it
    assert {"a", "kubric/a"} <= set(read_predictions(tmp_path, Problems()))
    assert read_predictions(tmp_path, Problems())["a"].image == str((tmp_path / "a.png").resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no predictions.jsonl and no images"):
        read_predictions(tmp_path / "empty", Problems())


def test_world_judge_scores_world_samples(tmp_path, capsys):
    from worldboot.world.gen import generate_triplets

    triplets = generate_triplets(tmp_path / "world", 1, seed=5)
    pred = tmp_path / "pred"
    pred.mkdir()
    for t in triplets:
        shutil.copy(t.target, pred / f"{t.id}.png")
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", f"truth={pred}", "--bench", str(tmp_path / "world" / "manifest.jsonl"),
                 "--out", str(out), "--judge", "world"]) == 0
    rows = _rows(out)
    copy = [r for r in rows if r["model"] == "Copy"]
    truth = [r for r in rows if r["model"] == "truth"]
    assert len(copy) == len(truth) == len(triplets)
    assert all(r["judge_score"] == 0.0 for r in copy)  # a copy never scores (the judge's rule)
    assert all(r["judge_score"] == 10.0 and r["judge"]["details"] for r in truth)
    assert "Judge: world" in capsys.readouterr().out


def test_world_judge_refuses_a_bench_without_world_samples(bench, capsys):
    out = bench["tmp"] / "world"
    assert main(["evaluate", str(bench["editor"]), "--bench", str(bench["manifest"]), "--out", str(out),
                 "--judge", "world", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--judge world scores only the procedural world's triplets" in err and "Traceback" not in err
    assert not out.exists()  # refused before the report folder is made


def test_world_judge_fails_foreign_samples_one_by_one_and_says_so(tmp_path):
    from worldboot.world.gen import generate_triplets

    triplets = generate_triplets(tmp_path / "world", 1, seed=5)
    manifest = tmp_path / "world" / "manifest.jsonl"
    foreign = {"id": "dance", "subset": "other", "source": triplets[0].source, "target": triplets[0].target,
               "action": "make the table dance"}
    manifest.write_text(manifest.read_text() + json.dumps(foreign) + "\n")
    pred = tmp_path / "pred"
    pred.mkdir()
    for t in [*triplets, foreign]:
        tid, target = (t["id"], t["target"]) if isinstance(t, dict) else (t.id, t.target)
        shutil.copy(target, pred / f"{tid}.png")
    out = tmp_path / "report"
    assert main(["evaluate", "--pred", f"truth={pred}", "--bench", str(manifest), "--out", str(out),
                 "--judge", "world", "--quiet"]) == 0
    rows = {(r["model"], r["id"]): r for r in _rows(out)}
    assert rows[("truth", "dance")]["judge_score"] is None
    assert rows[("truth", triplets[0].id)]["judge_score"] == 10.0
    md = (out / "table.md").read_text()
    assert "The world judge could not score 2 of" in md and "not an action of the procedural world" in md


def test_aurora_bench_json(aurora_bench, tmp_path):
    from worldboot.data.aurora import load_aurora_bench

    triplets = load_aurora_bench(aurora_bench / "test.json", require_target=False)
    pred = tmp_path / "pred"
    pred.mkdir()
    picked = {}
    for t in triplets:
        if len([p for p in picked.values() if p.subset == t.subset]) < 2:
            picked[t.id] = t
            shutil.copy(t.target, pred / f"{t.id}{Path(t.target).suffix}")
    cfg = load_config(EvaluateConfig, overrides=[
        f"bench={aurora_bench / 'test.json'}", f"out={tmp_path / 'out'}", f"preds={{gt: {pred}}}",
        "judge.type=none", "max_per_subset=2",
    ])
    result = run_evaluation(cfg, show_progress=False)
    l1 = result["table"]["metrics"]["l1"]["values"]
    assert l1["gt"]["Avg."]["mean"] == 0.0 and l1["gt"]["Avg."]["scored"] == len(picked)
    assert l1["Copy"]["Avg."]["mean"] > 0.0


# -- spatial multiple choice and the K plot ------------------------------------------------------------


def test_spatial_multiple_choice_on_tiny(tiny, tiny_dir, tmp_path, capsys):
    from worldboot.data.schema import Problems
    from worldboot.evaluate.spatial import SpatialConfig, read_mc, run_spatial

    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"q{i}.png")
    items = [
        {"image": "q0.png", "question": "Where is the cube?", "choices": ["left", "right"], "answer": 0},
        {"image": "q1.png", "question": "Which is closer?", "choices": ["the ball", "the cube", "the box"], "answer": "the box"},
        {"image": "q2.png", "question": "Is it above?", "choices": ["yes", "no"], "answer": "B"},
    ]
    f = tmp_path / "mc.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in items) + "{bad\n" + json.dumps({"image": "q0.png"}) + "\n")
    assert [it.answer for it in read_mc(f, Problems())] == [0, 2, 1]

    cfg = SpatialConfig(model=str(tiny_dir), files=[str(f)], out=str(tmp_path / "out"))
    result = run_spatial(cfg, backbone=tiny)
    stats = result["table"]["mc"]
    assert stats["scored"] == 3 and stats["total"] == 3 and 0.0 <= stats["accuracy"] <= 1.0
    rows = [json.loads(x) for x in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    # the prediction is the argmax of the log-likelihoods the backbone gives each choice
    row = rows[1]
    enc = tiny.encode_images([Image.open(tmp_path / "q1.png").convert("RGB")])
    exs = [tiny.text_example(enc.codes[0], cfg.prompt.format(question=row["question"]), " " + c) for c in row["choices"]]
    totals = tiny.score(exs).total.tolist()
    assert row["logprob"] == pytest.approx(totals, abs=f32_atol(max(map(abs, totals))))  # totals: one-signed log-probabilities summed, so they bound them (helpers.f32_atol)
    assert row["prediction"] == int(np.argmax(totals))
    assert stats["accuracy"] == sum(r["correct"] for r in rows) / 3
    assert len((tmp_path / "out" / "problems.jsonl").read_text().splitlines()) == 2

    # through the CLI (loads the model directory)
    assert main(["evaluate", "spatial", str(f), "--model", str(tiny_dir), "--out", str(tmp_path / "cli")]) == 0
    assert "| mc |" in capsys.readouterr().out


def test_plot_verb_draws_score_vs_k(tmp_path, capsys):
    rows = [
        {"model": m, "k": k, "repeat": r, "subset": s, "score": base + 0.1 * k + 0.05 * r}
        for m, base in (("C-FT", 3.0), ("CWM", 3.5)) for k in (1, 2, 4, 8) for r in range(3) for s in ("kubric", "Avg.")
    ]
    f = tmp_path / "k.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "fig.png"
    assert main(["evaluate", "plot", str(f), "--out", str(out), "--ref", "GoT=3.14"]) == 0
    assert Image.open(out).size[0] > 100
    from worldboot.evaluate.plots import k_statistics

    mean, std, n = k_statistics(rows)["kubric"]["CWM"][4]
    assert mean == pytest.approx(3.5 + 0.4 + 0.05) and n == 3 and std == pytest.approx(0.05 * np.sqrt(2 / 3))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"model": "x", "k": 1}) + "\n")
    assert main(["evaluate", "plot", str(bad), "--out", str(out)]) == 2
    assert "bad.jsonl:1: missing field" in capsys.readouterr().err
    for score, says in (("NaN", "score is not a finite number: nan"), ("9" * 400, "bad value"),
                        ("1e999", "score is not a finite number")):
        row = {"model": "x", "k": 1, "repeat": 0, "subset": "s"}
        bad.write_text(json.dumps(row)[:-1] + f', "score": {score}}}\n')  # as a tool writes it
        assert main(["evaluate", "plot", str(bad), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"bad.jsonl:1: {says}" in err and "Traceback" not in err, err
