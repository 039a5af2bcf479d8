"""The world base's recipe refuses sizes it cannot build, in one line naming the key and what it
must be, before anything is built: ``vq.codebook=0`` and a head count that does not divide the
width were tracebacks from inside the model's constructor."""

from __future__ import annotations

import pytest

import worldboot.base as wb
from worldboot.base.recipe import LMRecipe, VQRecipe
from worldboot.cli import main
from worldboot.errors import ConfigError


@pytest.mark.parametrize(("override", "says"), [
    ("vq.codebook=0", "vq.codebook must be at least 1, got 0"),
    ("vq.codebook=5", "vq.codebook=337, got 5"),
    ("vq.embed_dim=-1", "vq.embed_dim must be at least 1, got -1"),
    ("vq.base_channels=48", "vq.base_channels must be a multiple of 32"),
    ("vq.channel_multiplier=[]", "vq.channel_multiplier must be 1 to 5 positive integers"),
    ("vq.channel_multiplier=[1,1,1,1,1,1,1,1]", "vq.channel_multiplier must be 1 to 5 positive integers"),
    ("vq.channel_multiplier=[1,0,2,2]", "got [1, 0, 2, 2]"),
    ("vq.jitter=0.9", "vq.jitter + vq.clip_frames must be at most 1"),
    ("vq.crowded=-0.1", "vq.crowded must be at least 0"),
    ("vq.eval_scenes=0", "vq.eval_scenes must be at least 1"),
    ("vq.train.batch_size=0", "vq.train.batch_size must be at least 1, got 0"),
    ("vq.train.lr=0", "vq.train.lr must be greater than 0"),
    ("lm.layers=0", "lm.layers must be at least 1, got 0"),
    ("lm.layers=-2", "lm.layers must be at least 1, got -2"),
    ("lm.heads=0", "lm.heads must be at least 1, got 0"),
    ("lm.hidden=0", "lm.hidden must be at least 1, got 0"),
    ("lm.hidden=130", "lm.hidden must be a multiple of 2 x lm.heads = 8"),
    ("lm.hidden=12", "lm.hidden must be a multiple of 2 x lm.heads = 8"),  # divisible, but 3 per head
    ("lm.intermediate=0", "lm.intermediate must be at least 1"),
    ("lm.text_vocab=0", "lm.text_vocab must be at least 1"),
    ("lm.scenes=0", "lm.scenes must be at least 1"),  # it drew batches from no scenes for ever
    ("lm.batch_size=0", "lm.batch_size must be at least 1"),
    ("lm.lr=-1", "lm.lr must be greater than 0"),
    ("lm.copy_fraction=1.5", "lm.copy_fraction must be at most 1"),
    ("threads=-1", "threads must be at least 0"),
])
def test_a_size_the_base_cannot_have_is_one_line(override, says, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLDBOOT_CACHE", str(tmp_path))
    assert main(["base", "build", "--quiet", override]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("worldboot base: error: ") and says in err[0], err
    assert not list(tmp_path.glob("base-*"))  # nothing built, nothing left


def test_the_checks_hold_for_files_and_python_and_leave_good_recipes_alone(tmp_path):
    (tmp_path / "bad.yaml").write_text("lm:\n  heads: 0\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: lm\.heads must be at least 1, got 0"):
        wb.load_recipe("smoke", tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="lm.hidden must be a multiple of 2 x lm.heads"):
        LMRecipe(hidden=100, heads=8)
    with pytest.raises(ConfigError, match="vq.base_channels must be a multiple of 32"):
        VQRecipe(base_channels=40)
    recipe = wb.load_recipe("smoke", overrides=["lm.hidden=64", "lm.heads=8", "lm.steps=0", "vq.train.steps=0"])
    assert (recipe.lm.hidden, recipe.lm.heads, recipe.vq.token_grid) == (64, 8, 8)
    for name in wb.PRESETS:
        wb.load_recipe(name)  # the shipped presets pass
