"""The shipped world bases: one per preset, named by the hash of the recipe code that built it,
taken before any build."""

from __future__ import annotations

import pytest

from worldboot import base as wb
from worldboot.base import shipped, store


@pytest.mark.parametrize("name", wb.PRESETS)
def test_each_preset_ships_the_base_of_its_current_recipe(name):
    recipe = wb.load_recipe(name)
    path = shipped.shipped_path(recipe)
    assert wb.is_built(path), (
        f"the package ships no {name} base for its recipe's hash {wb.recipe_hash(recipe)} (the recipe code or "
        f"the world changed): run 'worldboot base build --preset {name} --ship' and commit "
        f"src/worldboot/base/weights/")
    info = wb.read_info(path)
    assert info["recipe"]["name"] == name and info["vq"]["parse_rate"] >= 0.99


def test_no_stale_base_ships():
    current = {shipped.shipped_path(wb.load_recipe(name)).name for name in wb.PRESETS}
    assert {p.name for p in shipped.shipped_bases()} <= current


def test_the_shipped_base_is_taken_without_building(monkeypatch, tmp_path):
    def refuse(*_args, **_kwargs):
        raise AssertionError("built although the package ships the base")

    monkeypatch.setenv("WORLDBOOT_CACHE", str(tmp_path / "empty"))
    monkeypatch.setattr(store, "build_world_base", refuse)
    name = next(n for n in wb.PRESETS if wb.is_built(shipped.shipped_path(wb.load_recipe(n))))
    assert wb.get_world_base(name, progress=False) == shipped.shipped_path(wb.load_recipe(name))
    assert not (tmp_path / "empty").exists()


def test_ship_replaces_the_older_base_of_its_name(tmp_path, monkeypatch):
    monkeypatch.setattr(shipped, "weights_root", lambda: tmp_path / "weights")
    recipe = wb.load_recipe("smoke")
    old = tmp_path / "weights" / "base-smoke-000000000000"
    old.mkdir(parents=True)
    (tmp_path / "weights" / "base-paper-111111111111").mkdir()
    built = tmp_path / "built"
    built.mkdir()
    (built / "model.safetensors").write_bytes(b"x")
    dest = shipped.ship(built, recipe)
    assert dest.name == f"base-smoke-{wb.recipe_hash(recipe)}" and (dest / "model.safetensors").is_file()
    assert not old.exists() and (tmp_path / "weights" / "base-paper-111111111111").is_dir()
