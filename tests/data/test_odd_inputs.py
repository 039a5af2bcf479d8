"""Inputs from other tools and other people: wrongly typed AURORA fields, byte-order marks,
linked data folders, 16-bit and float images, rotated photos, and outputs that would
overwrite an input. Each loads, or gets one line naming the file and entry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import json_entry_lines
from worldboot.cli import main
from worldboot.data.aurora import load_aurora_bench
from worldboot.data.formats import detect_format, load_any
from worldboot.data.schema import Problems, read_manifest
from worldboot.errors import DataError
from worldboot.images import open_image


def _bench(root: Path, entries: list, bom: bool = False) -> Path:
    images = root / "data" / "ag" / "images"
    images.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), (200, 30, 30)).save(images / "a.png")
    Image.new("RGB", (24, 16), (30, 200, 30)).save(images / "b.png")
    path = root / "test.json"
    path.write_text(("\ufeff" if bom else "") + json.dumps(entries, indent=1), encoding="utf-8")
    return path


def _entry(**kw):
    return {"input": "data/ag/images/a.png", "output": "data/ag/images/b.png", "instruction": "open it",
            "task": "ag"} | kw


def test_wrongly_typed_aurora_fields_are_problems_by_entry(tmp_path):
    entries = [
        _entry(), _entry(task=["ag"]), _entry(input=3), _entry(instruction={"a": 1}),
        _entry(instruction=None, prompt="close it"), _entry(output=["b.png"]),
    ]
    path = _bench(tmp_path, entries)
    problems = Problems()
    triplets = load_aurora_bench(path, problems=problems)
    assert [t.id for t in triplets] == ["ag-1", "ag-5"] and triplets[1].action == "close it"
    starts = json_entry_lines(entries)
    by_entry = {starts.index(p.line) + 1: p.reason for p in problems}
    assert by_entry == {2: "field 'task' must be text, got list", 3: "field 'input' must be text, got int",
                        4: "field 'instruction' must be text, got dict", 6: "field 'output' must be text, got list"}


def test_a_bench_entry_without_task_does_not_turn_the_file_into_a_training_set(tmp_path):
    folder = tmp_path / "data" / "aurora-bench"  # the layout of a copied benchmark
    entries = [_entry(), _entry(task="something"), {k: v for k, v in _entry().items() if k != "task"}]
    path = _bench(folder, entries)
    assert detect_format(path) == "aurora-bench"
    problems = Problems()
    triplets = load_any(path, problems=problems)
    third = json_entry_lines(entries)[2]
    assert len(triplets) == 2 and [(p.line, p.reason) for p in problems] == [(third, "missing field: task")]
    # ... and one entry of a training set that names a task does not turn it into the benchmark.
    plain = {k: v for k, v in _entry().items() if k != "task"}
    train = _bench(tmp_path / "train", [plain, plain, {**plain, "task": "ag"}])
    assert detect_format(train) == "aurora-train"


def test_byte_order_marks_and_unreadable_json(tmp_path):
    path = _bench(tmp_path, [_entry()], bom=True)
    assert len(load_aurora_bench(path)) == 1
    manifest = tmp_path / "m.jsonl"
    line = json.dumps({"id": "x", "source": str(tmp_path / "data/ag/images/a.png"), "action": "go"})
    manifest.write_text("\ufeff" + line + "\n" + line.replace('"x"', '"y"') + "\n", encoding="utf-8")
    problems = Problems()
    assert [t.id for t in read_manifest(manifest, problems)] == ["x", "y"] and not len(problems)
    huge = tmp_path / "huge.json"
    huge.write_text("[" + "9" * 5000 + "]")
    with pytest.raises(DataError, match="huge.json: unreadable JSON"):
        load_aurora_bench(huge)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataError, match="deep.json: unreadable JSON"):
        load_aurora_bench(deep)


def test_a_linked_data_folder_is_inside_the_root_and_dotdot_is_not(tmp_path):
    real = tmp_path / "elsewhere"
    _bench(real, [])
    root = tmp_path / "bench"
    root.mkdir()
    (root / "data").symlink_to(real / "data", target_is_directory=True)
    path = root / "test.json"
    entries = [_entry(), _entry(input="../elsewhere/data/ag/images/a.png")]
    path.write_text(json.dumps(entries, indent=1))
    problems = Problems()
    triplets = load_aurora_bench(path, problems=problems)
    assert len(triplets) == 1 and Path(triplets[0].source) == (real / "data/ag/images/a.png").resolve()
    assert [p.line for p in problems] == json_entry_lines(entries)[1:]
    assert "escapes the data root" in problems.items[0].reason


def test_a_symlink_loop_as_an_image_is_a_problem_of_its_entry(tmp_path, capsys):
    images = tmp_path / "data" / "ag" / "images"
    entries = [_entry(), _entry(input="data/ag/images/loop.png"), _entry(output="data/loop/b.png")]
    path = _bench(tmp_path, entries)
    (images / "loop.png").symlink_to("loop2.png")  # ln -s a b; ln -s b a
    (images / "loop2.png").symlink_to("loop.png")
    (tmp_path / "data" / "loop").symlink_to("loop")  # a folder on the way that loops
    says = {2: "path runs into a symbolic link loop: data/ag/images/loop.png",
            3: "path runs into a symbolic link loop: data/loop/b.png"}  # by line of the JSONL below
    starts = json_entry_lines(entries)
    for check_images in (True, False):
        problems = Problems()
        assert len(load_aurora_bench(path, problems=problems, check_images=check_images)) == 1
        assert {starts.index(p.line) + 1: p.reason for p in problems} == says
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "source": e["input"], "target": e["output"],
                                            "action": "go"}) + "\n" for i, e in enumerate(json.loads(path.read_text()))))
    problems = Problems()
    assert [t.id for t in read_manifest(manifest, problems)] == ["0"] and {p.line: p.reason for p in problems} == says
    with pytest.raises(DataError, match="m.jsonl:2: path runs into a symbolic link loop: data/ag/images/loop.png"):
        read_manifest(manifest, Problems(strict=True))
    assert main(["data", "inspect", str(path)]) == 0
    assert f"test.json:{starts[1]}: path runs into a symbolic link loop: data/ag/images/loop.png" in capsys.readouterr().out
    assert main(["data", "convert", str(manifest), "--out", str(tmp_path / "o.jsonl"), "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"worldboot data: error: {manifest}:2: path runs into a symbolic link loop: data/ag/images/loop.png"]


def test_16_bit_float_and_rotated_images_read_as_a_viewer_shows_them(tmp_path):
    ramp16 = (np.arange(64, dtype=np.uint32) * 1024).astype(np.uint16).reshape(4, 16)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    got = np.asarray(open_image(tmp_path / "g16.png"))
    assert got.shape == (4, 16, 3) and got[0, 0, 0] == 0 and got[-1, -1, 0] == 63 * 1024 // 256
    ramp = np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(4, 16)
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    got = np.asarray(open_image(tmp_path / "f.tif"))
    assert got[0, 0, 0] == 0 and got[-1, -1, 0] == 255 and 100 < got.mean() < 155
    photo = Image.new("RGB", (30, 10), (255, 0, 0))
    exif = photo.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    photo.save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg").size == (10, 30)


def test_convert_refuses_to_overwrite_its_input_and_problems_no_emoji(tmp_path, capsys):
    entries = [_entry()] * 99 + [_entry(instruction="")]
    path = _bench(tmp_path, entries)
    assert main(["data", "inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"test.json:{json_entry_lines(entries)[99]}: empty action" in out.replace("\n", "")
    manifest = tmp_path / "m.jsonl"
    assert main(["data", "convert", str(path), "--out", str(manifest), "--problems", str(manifest)]) == 2
    assert "--problems" in capsys.readouterr().err and not manifest.exists()
    assert main(["data", "convert", str(path), "--out", str(manifest)]) == 0
    before = manifest.read_bytes()
    assert main(["data", "convert", str(manifest), "--out", str(manifest)]) == 2
    assert "would overwrite the data file" in capsys.readouterr().err and manifest.read_bytes() == before


def test_convert_lists_its_problems_and_checks_the_problems_file_first(tmp_path, capsys):
    entries = [_entry(), _entry(instruction=""), _entry(task="clevr", output=None)]
    path = _bench(tmp_path, entries)
    out = tmp_path / "m.jsonl"
    assert main(["data", "convert", str(path), "--out", str(out), "--problems", str(tmp_path)]) == 2
    assert "--problems" in capsys.readouterr().err and not out.exists()  # nothing written before
    assert main(["data", "convert", str(path), "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"test.json:{json_entry_lines(entries)[1]}: empty action" in said.replace("\n", "")
    # A task asked for: the no-target entries of other subsets are not counted as its skipped.
    assert main(["data", "convert", str(path), "--out", str(tmp_path / "j.jsonl"), "--keep-no-target"]) == 0
    capsys.readouterr()
    assert main(["data", "inspect", str(tmp_path / "j.jsonl"), "--task", "ag"]) == 0
    table = capsys.readouterr().out
    assert "clevr" not in table and "ag" in table


@pytest.mark.parametrize("argv", [
    ["data", "convert", "{bench}", "--out", "{folder}"],
    ["data", "inspect", "{bench}", "--problems", "{folder}"],
    ["evaluate", "{folder}", "--bench", "{bench}", "--out", "{file}", "--judge", "none"],
    ["data", "convert", "{bench}", "--out", "{file}/m.jsonl"],
])
def test_an_output_that_is_a_folder_or_under_a_file_is_one_line(argv, tmp_path, capsys):
    bench = _bench(tmp_path, [_entry()])
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("keep me")
    words = [w.format(bench=bench, folder=tmp_path / "folder", file=tmp_path / "file") for w in argv]
    assert main(words) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"worldboot {words[0]}: error: ") and "Traceback" not in err[0]
    assert (tmp_path / "file").read_text() == "keep me"


def test_a_cut_short_jpeg_or_a_folder_is_not_an_image(tmp_path):
    rng = np.random.default_rng(0)
    path = _bench(tmp_path, [_entry(input="data/ag/images/cut.jpg"), _entry(input="data/ag/images/dir.jpg")])
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / "whole.jpg")
    whole = (tmp_path / "whole.jpg").read_bytes()
    (tmp_path / "data/ag/images/cut.jpg").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "data/ag/images/dir.jpg").mkdir()
    problems = Problems()
    assert load_aurora_bench(path, problems=problems) == []
    reasons = [p.reason for p in problems]
    assert reasons[0].startswith("unreadable source image: data/ag/images/cut.jpg: image file is truncated")
    assert reasons[1] == "source image is a folder: data/ag/images/dir.jpg"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_jsonl_lines_end_at_any_newline(tmp_path, newline):
    """A JSONL file from an old Mac editor (lone \\r) is four lines, not one malformed line."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    row = {"id": "x", "source": "a.png", "action": "go"}
    lines = [json.dumps(row), "{not json", "", json.dumps({**row, "id": "y"})]
    (tmp_path / "m.jsonl").write_bytes(newline.join(lines).encode() + newline.encode())
    problems = Problems()
    assert [t.id for t in read_manifest(tmp_path / "m.jsonl", problems)] == ["x", "y"]
    assert [(p.line, p.reason.split(":")[0]) for p in problems] == [(2, "malformed JSON")]


def test_pils_large_image_warning_is_a_library_warning_kept_off_the_console(tmp_path, monkeypatch):
    """PIL warns of an image over its pixel limit and reads it: without --verbose the console
    keeps to worldboot's own lines (quiet_libraries), as for other libraries' warnings."""
    import warnings

    from worldboot.data.schema import image_problem
    from worldboot.progress import quiet_libraries

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40x40 is over it, under twice it
    Image.new("RGB", (40, 40)).save(tmp_path / "big.png")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        assert image_problem(tmp_path / "big.png") is None
        assert [w.category for w in seen] == [Image.DecompressionBombWarning]  # PIL does warn
        quiet_libraries()
        seen.clear()
        assert image_problem(tmp_path / "big.png") is None
    assert not seen


def test_a_root_or_data_file_that_is_no_such_thing_is_one_line(tmp_path, capsys):
    path = _bench(tmp_path, [_entry()])
    for root, says in ((tmp_path / "nope", "is not a folder (it does not exist)"), (path, "is not a folder")):
        assert main(["data", "inspect", str(path), "--root", str(root)]) == 2
        assert f"--root {root} {says}" in capsys.readouterr().err
    (tmp_path / "m.jsonl").mkdir()
    assert main(["data", "inspect", str(tmp_path / "m.jsonl")]) == 2
    assert "m.jsonl is a folder: give the data file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["data", "inspect", "{loop}.json"],
    ["data", "inspect", "{loop}.jsonl"],
    ["evaluate", "{tmp}", "--bench", "{loop}.json", "--out", "{tmp}/r", "--judge", "none"],
    ["keyframes", "{loop}.mp4", "--out", "{tmp}/k"],
    ["keyframes", "{tmp}", "--config", "{loop}.yaml", "--out", "{tmp}/k"],
])
def test_an_input_that_is_a_symlink_loop_says_so(argv, tmp_path, capsys):
    """is_file() is False for a link loop too: the error names the loop, not "not found"."""
    for suffix in (".json", ".jsonl", ".mp4", ".yaml"):
        (tmp_path / f"a{suffix}").symlink_to(f"b{suffix}")
        (tmp_path / f"b{suffix}").symlink_to(f"a{suffix}")
    words = [w.format(loop=tmp_path / "a", tmp=tmp_path) for w in argv]
    assert main(words) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "symbolic links" in err[0] and "not found" not in err[0], err
