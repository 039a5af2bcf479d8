"""The world's foundation model: recipe, words, a tiny real build, the cache and the CLI."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from worldboot.config import read_yaml, to_dict
from worldboot.data import world
from worldboot.foundation import world_base as wb
from worldboot.models import load_backbone
from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon

ROOT = Path(__file__).resolve().parents[2]
#: What the smoke preset's tokenizer reaches at least (measured: see the module docstring).
SMOKE_PARSE_RATE = 0.05

#: A recipe small enough for a test: a real build, minutes shrunk to seconds.
#: (The test takes about 40 s on 2 loaded cores.)
MICRO = [
    "name=micro",
    "threads=1",
    "vq.train.steps=90",
    "vq.train.batch_size=6",
    "vq.eval_scenes=40",
    "lm.scenes=64",
    "lm.steps=30",
    "lm.batch_size=8",
    "lm.eval_scenes=4",
]


def _recipe(*extra: str) -> wb.BaseRecipe:
    return wb.load_recipe("smoke", overrides=[*MICRO, *extra])


class _Spy:
    """Counts calls of the real build function."""

    def __init__(self) -> None:
        self.calls = 0
        self.real = wb.build_world_base
        self.lock = threading.Lock()

    def __call__(self, *args, **kwargs):
        with self.lock:
            self.calls += 1
        return self.real(*args, **kwargs)


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLDBOOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WORLDBOOT_NO_PROGRESS", "1")
    spy = _Spy()
    monkeypatch.setattr(wb, "build_world_base", spy)
    return spy


def test_presets_match_shipped_yaml():
    for name in wb.PRESETS:
        path = ROOT / "configs" / "demo" / f"base_{name}.yaml"
        assert path.read_text().startswith("# worldboot base build")
        shipped = wb.load_recipe(name, path)
        assert to_dict(shipped) == to_dict(wb.PRESETS[name]())
        assert read_yaml(path)["name"] == name


def test_hash_follows_recipe_and_world(monkeypatch):
    a = wb.recipe_hash(_recipe())
    assert a == wb.recipe_hash(_recipe())
    assert a != wb.recipe_hash(_recipe("lm.steps=31"))
    assert a != wb.recipe_hash(_recipe("vq.codebook=256"))
    assert a == wb.recipe_hash(_recipe("threads=2"))  # how fast it is built is not what is built
    monkeypatch.setattr(wb, "RECIPE_VERSION", wb.RECIPE_VERSION + 1)
    assert a != wb.recipe_hash(_recipe())


def test_describe_names_every_object_in_reading_order():
    scene = world.Scene(
        (
            world.Obj("bottle", "blue", "large", 3, 3, "upright"),
            world.Obj("circle", "red", "small", 0, 1),
        )
    )
    assert wb.describe(scene) == (
        "a table with two objects: a small red circle in the back row on the left and "
        "a large upright blue bottle in the front row on the far right."
    )


def test_corpus_holds_every_action_template_word():
    from worldboot.data.world_text import TEMPLATES

    words = set(" ".join(wb.text_corpus(n_scenes=50, n_actions=100)).replace(",", " ").split())
    for temps in TEMPLATES.values():
        for t in temps:
            for w in t.replace(",", " ").split():
                if not w.startswith("{"):
                    assert w in words, w


def test_build_load_reuse_and_rebuild(cache):
    recipe = _recipe()
    path = wb.get_world_base(recipe, progress=False)
    assert cache.calls == 1
    assert path.name == f"base-micro-{wb.recipe_hash(recipe)}"
    info = wb.read_info(path)
    assert info["lm"]["eval_loss"] < 6.0
    assert info["vq"]["codes_used"] >= 64  # no collapse onto a few codes
    # The build measures how local the tokenizer is and how well the LM copies a repeated image.
    assert 0.0 <= info["vq"]["codes_kept"] <= 1.0 and info["vq"]["locality"] >= 0.0
    assert 0.0 <= info["lm"]["copy_accuracy"] <= 1.0

    backbone = load_backbone(path)
    assert backbone.image_seq_len == 64 and backbone.codebook_size == 512
    # The base keeps its action-first world layout: source and target images side by side.
    assert backbone.templates == wb.PROMPTS and wb.PROMPTS.world == ""
    # Seconds of VQ training cannot reach the smoke preset's parse rate (slow test below), but
    # the round trip must already be far closer to the scene than an untrained tokenizer's.
    scenes = wb.eval_scenes(7, 20)
    trained = wb.vq_parse_rate(backbone, scenes)
    untrained = wb.vq_parse_rate(build_tiny_chameleon(TinyChameleonSpec(codebook=512, vq_embed_dim=32)), scenes)
    assert trained["pixel_mae"] < 0.5 * untrained["pixel_mae"], (trained, untrained)
    # The action words are in the vocabulary as whole pieces, not spelt out byte by byte.
    ids = backbone.tokenizer(" knock over the red bottle", add_special_tokens=False)["input_ids"]
    assert len(ids) <= 6

    # Second call: reused, not rebuilt.
    assert wb.get_world_base(recipe, progress=False) == path
    assert cache.calls == 1
    # A changed recipe is built into its own folder.
    other = _recipe("vq.train.steps=4", "lm.steps=2", "vq.eval_scenes=2", "lm.scenes=8")
    path2 = wb.get_world_base(other, progress=False)
    assert cache.calls == 2 and path2 != path and wb.is_built(path2) and wb.is_built(path)
    assert not list(path.parent.glob(".*tmp*"))


def test_concurrent_builders_build_once(cache):
    recipe = _recipe("name=tiny", "vq.train.steps=4", "lm.steps=2", "vq.eval_scenes=2", "lm.scenes=8")
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(wb.get_world_base(recipe, progress=False)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.calls == 1
    assert len(results) == 2 and results[0] == results[1] and wb.is_built(results[0])


def test_cli_path_and_help(tmp_path, monkeypatch, capsys):
    from worldboot.cli import main

    monkeypatch.setenv("WORLDBOOT_CACHE", str(tmp_path))
    assert main(["base", "path", "--preset", "paper"]) == 1
    assert "not built yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["base", "build", "--help"])
    assert exc.value.code == 0
    assert "worldboot base build --preset paper" in capsys.readouterr().out
    assert main(["base", "build", "nope=1"]) == 2


@pytest.mark.slow
def test_smoke_preset_round_trip_parses_scenes(tmp_path, monkeypatch):
    """The success criterion of the tokenizer, on the real smoke preset (minutes; opt in)."""
    monkeypatch.setenv("WORLDBOOT_CACHE", str(tmp_path))
    monkeypatch.setenv("WORLDBOOT_NO_PROGRESS", "1")
    path = wb.get_world_base("smoke", progress=False)
    rate = wb.vq_parse_rate(load_backbone(path), wb.eval_scenes(11, 100))["parse_rate"]
    assert rate >= SMOKE_PARSE_RATE, rate
