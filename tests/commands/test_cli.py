"""The CLI: every subcommand's --help works and shows an example; user errors exit 2 without a traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worldboot.cli import build_parser, main, subcommand_names

COMMANDS = subcommand_names(build_parser())


def test_there_are_commands():
    assert ["info"] in COMMANDS


@pytest.mark.parametrize("path", COMMANDS, ids=[" ".join(p) for p in COMMANDS])
def test_every_help_has_an_example(path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "example" in out.lower(), f"'worldboot {' '.join(path)} --help' has no example"
    assert "worldboot " + path[0] in out


def test_top_level_help_and_info(capsys):
    assert main([]) == 0
    assert "COMMAND" in capsys.readouterr().out
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "chameleon" in out and "device" in out


def test_model_dir_missing_files_is_one_line_exit_2(tmp_path, tiny_dir):
    """A model directory with missing files: one line naming it, exit 2, no traceback."""
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "worldboot.cli", "info", "--model", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "config.json" in lines[0] and str(bad) in lines[0]
    # --debug shows the traceback for the same mistake.
    proc = subprocess.run(
        [sys.executable, "-m", "worldboot.cli", "--debug", "info", "--model", str(bad)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_info_describes_a_model(tiny_dir, capsys):
    assert main(["info", "--model", str(tiny_dir)]) == 0
    assert "64 tokens per image" in capsys.readouterr().out.replace("\n", " ")


def test_unknown_command_exits_2():
    proc = subprocess.run([sys.executable, "-m", "worldboot.cli", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_console_is_quiet_unless_verbose(tiny_dir):
    """A command that loads a model prints its own output only: no library progress bar, log
    line or warning (``--verbose``, anywhere on the line, brings them back)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "WORLDBOOT_NO"))}
    quiet = subprocess.run([sys.executable, "-m", "worldboot.cli", "info", "--model", str(tiny_dir)],
                           capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    noise = [line for line in quiet.stderr.splitlines() if "Warning" in line or "Loading weights" in line
             or line.startswith("[transformers]")]
    assert noise == [], noise
    loud = subprocess.run([sys.executable, "-m", "worldboot.cli", "info", "--model", str(tiny_dir), "--verbose"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr
