"""configs/emu3/: the paper's recipe for Emu3, as configs/anole7b/ is for Anole-7B: the same
numbers (LoRA r16 / alpha 32 / dropout 0.05, the appendix's optimiser, epochs and mixtures), micro
batches sized for Emu3's longer image sequences, and each preset's first line a command that
resolves to it."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from worldboot.cli import main
from worldboot.train.resolve import resolve_train_config

TASKS = {"cdm": "dynamics", "cft": "world", "cwm": "world"}


@pytest.mark.parametrize("preset", list(TASKS))
def test_emu3_presets_are_the_papers_numbers(preset):
    emu3 = resolve_train_config(f"configs/emu3/{preset}.yaml", task=TASKS[preset])
    anole = resolve_train_config(f"configs/anole7b/{preset}.yaml", task=TASKS[preset])
    assert (emu3.lora.r, emu3.lora.alpha, emu3.lora.dropout) == (16, 32, 0.05)
    assert emu3.optim == anole.optim and emu3.epochs == anole.epochs and emu3.batch_size == anole.batch_size
    assert {s.name: s.max_per_subset for s in emu3.data.sources} == {s.name: s.max_per_subset for s in anole.data.sources}
    assert getattr(emu3, "loss", None) == getattr(anole, "loss", None)
    # An Emu3 image is 4,169 tokens (64 rows of 64 codes and a row end, and its markers): one
    # sequence a micro-batch, the paper's batch by accumulation.
    assert emu3.micro_batch_size == 1 and emu3.gradient_checkpointing


@pytest.mark.parametrize("preset", list(TASKS))
def test_each_emu3_presets_first_line_resolves_to_it(preset, capsys):
    first = (Path("configs/emu3") / f"{preset}.yaml").read_text().splitlines()[0]
    words = shlex.split(first.lstrip("# "))
    words = words[words.index("train"):]
    assert main([*words, "--print-config"]) == 0
    printed = capsys.readouterr().out
    assert "micro_batch_size: 1" in printed
    caches = [words[i + 1] for i, w in enumerate(words) if w == "--cache"]
    assert all("=runs/cache/emu3/" in c for c in caches)


def test_the_emu3_generate_preset_loads():
    from worldboot.config import load_config
    from worldboot.infer.config import GenerateConfig

    cfg = load_config(GenerateConfig, "configs/emu3/generate.yaml", [])
    assert cfg.best_of == 3 and cfg.sampling.temperature == 1.0 and cfg.dtype == "bfloat16"


def test_docs_gpus_runs_the_emu3_presets_by_their_first_lines():
    """docs/gpus.md's Emu3 block: each command with a configs/emu3/ preset is that preset's first line."""
    root = Path(__file__).resolve().parents[2]
    text = (root / "docs" / "gpus.md").read_text()
    block = text.split("worldboot convert emu3 ", 1)[1].split("```", 1)[0]
    seen = set()
    for line in block.splitlines():
        if "--config configs/emu3/" in line:
            words = shlex.split(line)
            preset = words[words.index("--config") + 1]
            first = (root / "src" / "worldboot" / preset).read_text().splitlines()[0]
            assert line.strip() == first.removeprefix("# "), preset
            seen.add(Path(preset).stem)
    assert seen == {"cdm", "cwm", "generate"}
