"""The Anole-7B presets against the paper's Appendix K, L and L.1, number by number."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from worldboot.cli import main
from worldboot.train.resolve import resolve_train_config

#: Transcribed from the appendix: (preset, config field, the value, the appendix's words).
APPENDIX = [
    ("cdm", "epochs", 10, "K: Training is performed for 10 epochs"),
    ("cdm", "batch_size", 64, "K: with a batch size of 64"),
    ("cdm", "optim.lr", 2e-4, "K: using a learning rate of 2e-4"),
    ("cdm", "optim.scheduler", "cosine", "K: and cosine scheduling"),
    ("cdm", "optim.warmup_steps", 500, "K: (500 warm-up steps)"),
    ("cft", "epochs", 40, "L: Training is conducted for 40 epochs"),
    ("cft", "batch_size", 96, "L: with a batch size of 96"),
    ("cft", "optim.lr", 5e-4, "L: cosine learning rate scheduler (learning rate of 5e-4"),
    ("cft", "optim.scheduler", "cosine", "L: a cosine learning rate scheduler"),
    ("cft", "optim.warmup_steps", 400, "L: 400 warm-up steps)"),
    ("cft", "loss.weighting", "none", "L: We only train the model with the truncated loss from the completion part"),
    ("cwm", "epochs", 40, "L.1: Training is conducted for 40 epochs"),
    ("cwm", "batch_size", 96, "L.1: with a batch size of 96"),
    ("cwm", "optim.lr", 5e-4, "L.1: (learning rate of 5e-4"),
    ("cwm", "optim.scheduler", "cosine", "L.1: a cosine learning rate scheduler"),
    ("cwm", "optim.warmup_steps", 400, "L.1: 400 warm-up steps)"),
    ("cwm", "loss.weighting", "l2", "L.1: we weight the image tokens using L2 strategy as introduced in Section 3"),
    *[(p, "lora.enabled", True, f"{a}: apply LoRA (Hu et al., 2022)") for p, a in (("cdm", "K"), ("cft", "L"), ("cwm", "L.1"))],
    *[(p, "lora.r", 16, f"{a}: (rank 16") for p, a in (("cdm", "K"), ("cft", "L"), ("cwm", "L.1"))],
    *[(p, "lora.alpha", 32, f"{a}: α = 32") for p, a in (("cdm", "K"), ("cft", "L"), ("cwm", "L.1"))],
    *[(p, "lora.dropout", 0.05, f"{a}: dropout 0.05)") for p, a in (("cdm", "K"), ("cft", "L"), ("cwm", "L.1"))],
]

#: The data of each model (source name -> caps), from the same paragraphs.
MIXTURES = {
    # K: "Action-Genome, Kubric, MagicBrush, Something-Something from AURORA's annotated
    # trajectories, and 15K EPIC-Kitchens processed by us. We downsample Kubric's trajectories to 10K."
    "cdm": {"aurora": {"kubric": 10000}, "epic": {}},
    # L: "a combined dataset from Action-Genome, Kubric, MagicBrush, and Something-Something ...
    # We downsample Kubric's trajectories to 10K."
    "cft": {"aurora": {"kubric": 10000}},
    # L.1: "... together with 7K trajectories from Movements-in-Time, 7K trajectories from UCF-101
    # and 7K trajectories from Kinetics700 ... Again, we downsample Kubric's trajectories to 10K."
    "cwm": {"aurora": {"kubric": 10000}, "moments": {"synthetic/moments-in-time": 7000},
            "ucf101": {"synthetic/ucf101": 7000}, "kinetics": {"synthetic/kinetics-700": 7000}},
}
TASKS = {"cdm": "dynamics", "cft": "world", "cwm": "world"}


def _preset(name: str):
    return resolve_train_config(f"configs/anole7b/{name}.yaml", task=TASKS[name])


@pytest.mark.parametrize(("preset", "key", "value", "words"), APPENDIX, ids=[f"{p}-{k}" for p, k, _, _ in APPENDIX])
def test_every_number_is_the_appendix(preset, key, value, words):
    got = _preset(preset)
    for part in key.split("."):
        got = getattr(got, part)
    assert got == value, f"{preset}.yaml {key} = {got!r}; the paper ({words}) says {value!r}"


@pytest.mark.parametrize("preset", list(MIXTURES))
def test_each_model_sees_the_papers_data_and_bf16(preset):
    cfg = _preset(preset)
    assert {s.name: s.max_per_subset for s in cfg.data.sources} == MIXTURES[preset]
    # "We use bfloat16 mixed-precision training": auto is bf16 on GPUs that have it.
    assert cfg.mixed_precision in ("auto", "bf16") and cfg.model_dtype in ("auto", "bfloat16")


@pytest.mark.parametrize("preset", list(MIXTURES))
def test_each_presets_first_line_is_a_command_that_resolves_to_it(preset, capsys):
    """The command in the preset's first line, run with --print-config, trains the preset's own
    mixture: every source filled by its --cache, the caps kept."""
    first = (Path("configs/anole7b") / f"{preset}.yaml").read_text().splitlines()[0]
    words = shlex.split(first.lstrip("# "))
    words = words[words.index("train"):]  # after accelerate launch ... -m worldboot.cli
    assert main([*words, "--print-config"]) == 0
    printed = capsys.readouterr().out
    cfg = _preset(preset)
    for source in cfg.data.sources:
        assert f"name: {source.name}" in printed
    caches = [words[i + 1] for i, w in enumerate(words) if w == "--cache"]
    assert sorted(c.split("=")[0] for c in caches) == sorted(s.name for s in cfg.data.sources)


def test_the_readme_runs_the_presets_in_the_papers_order_opening_with_plan():
    """README's "On GPUs" block: `worldboot plan` first, then tokenize, the CDM, mining, C-FT
    and the CWM, best-of-3 and the GPT-4o evaluation, each preset's command its own first line."""
    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme.split("## On GPUs", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("   #")[0].strip() for line in block.strip().splitlines()]
    assert lines[0].startswith("worldboot plan --config configs/anole7b/")
    order = ["tokenize", "train dynamics --config configs/anole7b/cdm.yaml", "keyframes", "annotate", "select",
             "train world --config configs/anole7b/cft.yaml", "train world --config configs/anole7b/cwm.yaml",
             "anole7b/generate.yaml", "evaluate/aurora.yaml"]
    where = [next(i for i, line in enumerate(lines) if key in line) for key in order]
    assert where == sorted(where), dict(zip(order, where, strict=True))
    for line in lines:
        words = shlex.split(line)
        preset = words[words.index("--config") + 1] if "--config" in words else None
        if preset and not line.startswith("worldboot plan") and "mining/" not in preset:
            first = (root / "src" / "worldboot" / preset).read_text().splitlines()[0]
            assert line == first.removeprefix("# "), preset
