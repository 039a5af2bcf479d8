"""The world's foundation model: recipe, words, a tiny real build, the cache and the CLI."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from helpers import own_colour_share
from worldboot import base as wb
from worldboot import world
from worldboot.base import recipe as recipe_module
from worldboot.base import store
from worldboot.config import read_yaml
from worldboot.errors import ConfigError
from worldboot.models import load_backbone
from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon
from worldboot.world.patches import patch_code_count
from worldboot.world.render import render

ROOT = Path(__file__).resolve().parents[2]
#: What the issue asks of the smoke preset's tokenizer (and the paper's): exact and local.
EXACT_PARSE_RATE = 0.99
EXACT_CODES_KEPT = 0.995

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
    monkeypatch.setattr(store, "build_world_base", spy)  # what get_world_base calls
    return spy


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    """The MICRO recipe built once (1 torch thread) through a cache of its own, with the builder
    counted: its path, the counter and the cache folder (set only while building, so the other
    tests of the module see the usual cache)."""
    root = tmp_path_factory.mktemp("micro-cache")
    spy = _Spy()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORLDBOOT_CACHE", str(root))
        mp.setenv("WORLDBOOT_NO_PROGRESS", "1")
        mp.setattr(store, "build_world_base", spy)
        path = wb.get_world_base(_recipe(), progress=False)
    return path, spy, root


def test_presets_are_the_packaged_yaml_files():
    from worldboot.config import preset_file

    for name in wb.PRESETS:
        path = preset_file("demo", f"base_{name}")
        assert path.read_text().startswith("# worldboot base build")
        assert read_yaml(path)["name"] == name == wb.load_recipe(name).name
    assert wb.load_recipe("smoke", overrides=["lm.steps=7"]).lm.steps == 7
    with pytest.raises(ConfigError, match="unknown base preset 'huge'"):
        wb.load_recipe("huge")


def test_hash_follows_recipe_and_world(monkeypatch):
    a = wb.recipe_hash(_recipe())
    assert a == wb.recipe_hash(_recipe())
    assert a != wb.recipe_hash(_recipe("lm.steps=31"))
    assert a != wb.recipe_hash(_recipe("vq.codebook=256"))
    assert a == wb.recipe_hash(_recipe("threads=2"))  # how fast it is built is not what is built
    monkeypatch.setattr(recipe_module, "RECIPE_VERSION", wb.RECIPE_VERSION + 1)
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
    from worldboot.world.text import TEMPLATES

    words = set(" ".join(wb.text_corpus(n_scenes=50, n_actions=100)).replace(",", " ").split())
    for temps in TEMPLATES.values():
        for t in temps:
            for w in t.replace(",", " ").split():
                if not w.startswith("{"):
                    assert w in words, w


def test_build_load_reuse_and_rebuild(micro, monkeypatch):
    recipe = _recipe()
    path, cache, root = micro
    monkeypatch.setenv("WORLDBOOT_CACHE", str(root))
    monkeypatch.setenv("WORLDBOOT_NO_PROGRESS", "1")
    monkeypatch.setattr(store, "build_world_base", cache)
    assert cache.calls == 1
    assert path.name == f"base-micro-{wb.recipe_hash(recipe)}"
    info = wb.read_info(path)
    assert info["lm"]["eval_loss"] < 6.0
    assert info["vq"]["codes_used"] == patch_code_count(2)  # every patch of every drawing was taught
    # The build measures how local the tokenizer is and how well the LM copies a repeated image.
    assert 0.0 <= info["vq"]["codes_kept"] <= 1.0 and 0.0 <= info["vq"]["code_accuracy"] <= 1.0
    assert 0.0 <= info["lm"]["copy_accuracy"] <= 1.0
    # The smoke recipe starts the image codes from their words, and a build keeps that link
    # (measured 100 % after the micro build's 30 steps; about 15 % with lm.code_init=random).
    assert recipe.lm.code_init == "words"

    backbone = load_backbone(path)
    assert own_colour_share(backbone) >= 0.9
    assert backbone.image_seq_len == (2 * world.GRID) ** 2 and backbone.codebook_size == recipe.vq.codebook
    # The base keeps its action-first world layout: source and target images side by side.
    assert backbone.templates == wb.PROMPTS and wb.PROMPTS.world == ""
    # Seconds of VQ training cannot reach the smoke preset's exactness (test below), but the
    # codes must already be far closer to the cells' than an untrained tokenizer's.
    scenes = wb.eval_scenes(7, 20)
    trained = wb.vq_parse_rate(backbone, scenes)
    spec = TinyChameleonSpec(codebook=recipe.vq.codebook, vq_embed_dim=recipe.vq.embed_dim,
                             vq_channel_multiplier=recipe.vq.channel_multiplier)
    untrained = wb.vq_parse_rate(build_tiny_chameleon(spec), scenes)
    assert trained["code_accuracy"] > untrained["code_accuracy"] + 0.3, (trained, untrained)
    assert trained["pixel_mae"] < untrained["pixel_mae"], (trained, untrained)
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
    assert main(["base", "path", "--preset", "paper"]) == 0  # shipped with the package
    assert "/base/weights/base-paper-" in capsys.readouterr().out
    assert main(["base", "path", "--preset", "paper", "lm.steps=7"]) == 1  # a recipe nobody built
    assert "not built yet" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["base", "build", "--help"])
    assert exc.value.code == 0
    assert "worldboot base build --preset paper" in capsys.readouterr().out
    assert main(["base", "build", "nope=1"]) == 2


def test_the_recipe_must_give_every_patch_a_code(cache):
    from worldboot.errors import ConfigError

    with pytest.raises(ConfigError, match="a code for every patch"):
        wb.get_world_base(_recipe("name=bad", "vq.codebook=300"), progress=False)
    assert not list(wb.cache_root().glob("base-bad-*"))


@pytest.mark.timeout(1200)  # a second VQ training; seconds on idle cores
def test_the_tokenizer_does_not_depend_on_the_thread_count(micro, tmp_path):
    """The MICRO recipe's tokenizer stage trained again with 2 torch threads (summation orders
    differ from the build's 1) gives the same codes on a fixed set of scenes as the built base.
    Only the VQ is trained again: the codes do not depend on the language model. It runs in a
    process of its own with OpenMP's passive wait: beside the other test process on 2 cores, two
    spinning threads took 134-181 s in CI where this takes a third less (27 s on idle cores)."""
    import json
    import subprocess
    import sys

    import torch

    first, _, _ = micro
    assert wb.read_info(first)["recipe"]["threads"] == 1
    assert wb.recipe_hash(_recipe("threads=2")) == first.name.rsplit("-", 1)[1]  # the same model
    script = (
        "import json, sys, torch\n"
        "import worldboot.base as wb\n"
        "from worldboot.base.store import train_world_tokenizer\n"
        "from worldboot.world.render import render\n"
        "torch.set_num_threads(2)\n"
        "bb, _ = train_world_tokenizer(wb.load_recipe('smoke', overrides=json.loads(sys.argv[1])), progress=False)\n"
        "scenes = wb.eval_scenes(3, 60)\n"
        "torch.save(bb.encode_images([render(s, bb.image_size) for s in scenes]).codes, sys.argv[2])\n"
    )
    out = tmp_path / "codes.pt"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", script, json.dumps([*MICRO, "threads=2"]), str(out)],
                          capture_output=True, text=True, env=env, timeout=1100)
    assert done.returncode == 0, done.stderr[-3000:]
    scenes = wb.eval_scenes(3, 60)
    backbone = load_backbone(first)
    assert torch.equal(backbone.encode_images([render(s, backbone.image_size) for s in scenes]).codes, torch.load(out))


@pytest.mark.timeout(1800)  # builds the smoke base when neither shipped nor cached
def test_smoke_base_tokenizer_is_exact_and_local():
    """The smoke base (shipped; `worldboot base build`'s default): held-out scenes parse back
    after encode and decode, and the cells an action does not touch keep their codes.

    On 1000 scenes: a build's decoder differs in its last bits with the CPU and the thread
    count (the codes do not), and at a true rate near 99.4 % a 100-scene sample falls below the
    99 % bar about one build in eight (docs/log.md)."""
    backbone = load_backbone(wb.get_world_base("smoke", progress=False))
    rates = wb.vq_parse_rate(backbone, wb.eval_scenes(11, 1000))
    assert rates["parse_rate"] >= EXACT_PARSE_RATE, rates
    assert rates["code_accuracy"] >= EXACT_CODES_KEPT, rates
    local = wb.locality_rate(backbone, n=100, seed=5)
    assert local["codes_kept"] >= EXACT_CODES_KEPT and local["codes_changed"] > 0.9, local
