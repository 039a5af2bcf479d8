"""The guard: every command that reads a user's file is fed a corpus of bad inputs, and none
answers with a traceback. A bad file either stops the command with exit code 2 and one line
naming the file (``worldboot CMD: error: ...``), or its bad records are skipped and counted
(exit 0); a user error that reaches the top level as anything else is a bug."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from worldboot.cli import main


def _manifest(root: Path, lines: list[bytes]) -> Path:
    Image.new("RGB", (16, 16), (200, 30, 30)).save(root / "a.png")
    (root / "loop.png").symlink_to("loop2.png")  # a symbolic link loop: ln -s a b; ln -s b a
    (root / "loop2.png").symlink_to("loop.png")
    path = root / "m.jsonl"
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


GOOD = json.dumps({"id": "ok", "source": "a.png", "target": "a.png", "action": "push it"}).encode()

#: name -> the lines of a manifest (None: the manifest is a folder, not a file).
CORPUS: dict[str, list[bytes] | None] = {
    "not utf-8": [GOOD, b'{"id": "x", "source": "a.png", "action": "caf\xe9"}'],
    "wrong types": [GOOD, b'{"id": [1], "source": null, "action": 3, "meta": [1, 2]}',
                    b'{"id": "y", "source": "a.png", "action": "go", "target": 5}'],
    "not json": [GOOD, b"{id: 'x'", b"[1, 2, 3]", b'"just a string"'],
    "duplicates and escapes": [GOOD, GOOD, b'{"id": "z", "source": "../../../../etc/passwd", "action": "go"}'],
    "huge action": [GOOD, json.dumps({"id": "h", "source": "a.png", "target": "a.png",
                                      "action": "push " * 20_000}).encode()],
    "symlink loop": [GOOD, b'{"id": "l", "source": "loop.png", "target": "a.png", "action": "go"}',
                     b'{"id": "m", "source": "a.png", "target": "loop2.png", "action": "go"}'],
    "empty": [],
    "a folder": None,
}


def _commands(manifest: Path, out: Path, tiny_dir: Path) -> dict[str, list[str]]:
    return {
        "data inspect": ["data", "inspect", str(manifest)],
        "data convert": ["data", "convert", str(manifest), "--out", str(out / "conv.jsonl")],
        "tokenize": ["tokenize", str(manifest), "--backbone", str(tiny_dir), "--out", str(out / "cache")],
        "generate": ["generate", str(manifest), "--world", str(tiny_dir), "--out", str(out / "pred")],
        "evaluate": ["evaluate", str(out), "--bench", str(manifest), "--out", str(out / "report"), "--judge", "none"],
    }


@pytest.mark.parametrize("case", list(CORPUS))
@pytest.mark.parametrize("command", ["data inspect", "data convert", "tokenize", "generate", "evaluate"])
def test_no_command_answers_bad_input_with_a_traceback(command, case, tmp_path, tiny_dir, capsys):
    lines = CORPUS[case]
    if lines is None:
        manifest = tmp_path / "m.jsonl"
        manifest.mkdir()
    else:
        manifest = _manifest(tmp_path, lines)
    out = tmp_path / "out"
    out.mkdir()
    code = main(_commands(manifest, out, tiny_dir)[command])
    printed = capsys.readouterr()
    assert "Traceback" not in printed.err + printed.out
    assert code in (0, 2), (code, printed.err[-500:])
    if code == 2:
        last = printed.err.strip().splitlines()[-1]
        assert last.startswith(f"worldboot {command.split()[0]}: error: "), last
        assert "m.jsonl" in last or str(out) in last or "no usable" in last or "nothing" in last, last
    # Nothing half-written: no temporary file is left anywhere under the run folder.
    assert not [p for p in tmp_path.rglob(".*tmp*")], list(tmp_path.rglob(".*tmp*"))


@pytest.mark.parametrize("argv", [
    ["train", "dynamics", "--base", "nowhere", "--cache", "nowhere", "--config", "{config}"],
    ["generate", "{manifest}", "--world", "nowhere", "--out", "{out}", "--config", "{config}"],
    ["keyframes", "{out}", "--out", "{out}/kf", "--config", "{config}"],
    ["evaluate", "{out}", "--bench", "{manifest}", "--out", "{out}/r", "--config", "{config}"],
])
@pytest.mark.parametrize("config", [b"optim: {lr: .nan}\n", b"a: caf\xe9\n", b"[1, 2]\n", b"key: [unclosed\n",
                                    b"batch_size: 0\n"])
def test_bad_config_files_are_one_line(argv, config, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_bytes(config)
    manifest = _manifest(tmp_path, [GOOD])
    words = [w.format(config=path, manifest=manifest, out=tmp_path) for w in argv]
    code = main(words)
    printed = capsys.readouterr()
    assert code == 2 and "Traceback" not in printed.err + printed.out, printed.err[-500:]
    last = printed.err.strip().splitlines()[-1]
    assert last.startswith(f"worldboot {words[0]}: error: ") and len(printed.err.strip().splitlines()) == 1, printed.err
