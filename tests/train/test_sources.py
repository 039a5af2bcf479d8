"""``--cache`` fills a preset's sources by name and keeps their caps; the run records the mixture."""

from __future__ import annotations

import json

import pytest
import yaml

from worldboot.cli import main
from worldboot.config import load_config
from worldboot.errors import ConfigError
from worldboot.train.config import fill_sources
from worldboot.train.resolve import resolve_train_config
from worldboot.train.sft_config import SFTConfig


def test_named_caches_fill_the_papers_sources_and_keep_the_kubric_cap():
    cfg = resolve_train_config("configs/anole7b/cwm.yaml", task="world",
                               caches=["aurora=/data/aurora-cache", "ucf101=/data/mined-ucf"])
    got = {s.name: (s.cache, s.max_per_subset) for s in cfg.data.sources}
    assert got["aurora"] == ("/data/aurora-cache", {"kubric": 10000})
    assert got["ucf101"] == ("/data/mined-ucf", {"synthetic/ucf101": 7000})
    assert got["moments"][0] == "runs/cache/moments"  # not given: the preset's own path
    # The CDM's preset caps Kubric too (the paper's "CDM + DS") and has its EPIC source.
    cdm = resolve_train_config("configs/anole7b/cdm.yaml", task="dynamics", caches=["aurora=/a", "epic=/e"])
    assert {s.name: (s.cache, s.max_per_subset) for s in cdm.data.sources} == {
        "aurora": ("/a", {"kubric": 10000}), "epic": ("/e", {})}


def test_a_plain_cache_fills_the_source_it_names_and_a_stranger_is_refused():
    sources = resolve_train_config("configs/anole7b/cwm.yaml", task="world").data.sources
    # By its folder name, or by the preset's own path: the other source keeps its path.
    got = fill_sources(sources, ["/elsewhere/kinetics"])
    assert [(s.name, s.cache) for s in got] == [("aurora", "runs/cache/aurora-train"), ("moments", "runs/cache/moments"),
                                                ("ucf101", "runs/cache/ucf101"), ("kinetics", "/elsewhere/kinetics")]
    assert fill_sources(sources, ["runs/cache/aurora-train"])[0].max_per_subset == {"kubric": 10000}
    with pytest.raises(ConfigError, match=r"--cache /data/epic fits no source of cwm.yaml \(aurora, moments, "
                                          r"ucf101, kinetics\): name the one it fills, e.g. --cache aurora=/data/epic"):
        fill_sources(sources, ["/data/epic"], "cwm.yaml")
    with pytest.raises(ConfigError, match=r"--cache synthetic=/data/mined: cwm.yaml has no source "
                                          r"named 'synthetic' \(its sources: aurora, moments, ucf101, kinetics\)"):
        fill_sources(sources, ["synthetic=/data/mined"], "cwm.yaml")
    with pytest.raises(ConfigError, match="gives source 'aurora' of cwm.yaml twice"):
        fill_sources(sources, ["aurora=/a", "aurora=/b"], "cwm.yaml")
    assert sources[0].cache == "runs/cache/aurora-train"  # the config's own list is left as it was


def test_a_config_without_sources_trains_on_the_caches_given():
    got = fill_sources([], ["/a/labelled", "recognition=/b/rec"])
    assert [(s.name, s.cache) for s in got] == [("", "/a/labelled"), ("recognition", "/b/rec")]
    with pytest.raises(ConfigError, match=r"--cache a=/c: the name 'a' is given twice"):
        fill_sources([], ["a=/b", "a=/c"])


def test_the_cli_refuses_a_stranger_in_one_line(tmp_path, capsys):
    code = main(["train", "world", "--config", "configs/anole7b/cwm.yaml", "--base", str(tmp_path),
                 "--cache", str(tmp_path / "epic"), "--out", str(tmp_path / "run"), "--print-config"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "fits no source" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_the_run_records_the_mixture_it_trained(tiny_dir, cache_dir, tmp_path):
    preset = tmp_path / "preset.yaml"
    preset.write_text(yaml.safe_dump({
        "task": "dynamics", "max_steps": 2, "batch_size": 2, "micro_batch_size": 2, "save_every": 0,
        "eval_every": 0, "lora": {"dropout": 0.0},
        "data": {"eval_fraction": 0.0,
                 "sources": [{"cache": "nowhere", "name": "squares", "max_per_subset": {"squares/left": 3}}]},
    }))
    out = tmp_path / "run"
    assert main(["train", "dynamics", "--config", str(preset), "--base", str(tiny_dir),
                 "--cache", f"squares={cache_dir}", "--out", str(out)]) == 0
    saved = load_config(SFTConfig, out / "config.yaml")  # still a config, with the cap kept
    assert saved.data.sources[0].cache == str(cache_dir) and saved.data.sources[0].max_per_subset == {"squares/left": 3}
    mixture = json.loads((out / "meta.json").read_text())["mixture"]
    right = sum(1 for line in (cache_dir.parent / "images" / "manifest.jsonl").read_text().splitlines()
                if '"squares/right"' in line)
    assert mixture == [{"name": "squares", "cache": str(cache_dir), "max_per_subset": {"squares/left": 3},
                        "repeats": 1.0, "train": 3 + right, "held_out": 0}]
    text = (out / "config.yaml").read_text()
    assert "# The mixture trained (after caps and repeats):" in text
    assert f"#   squares: {cache_dir}, {3 + right} training and 0 held-out samples, capped" in text
