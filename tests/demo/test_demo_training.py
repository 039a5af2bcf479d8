"""The demo trains through ``worldboot train``'s presets: each of its runs resolves to exactly the
config the command line gives for the same preset and words."""

from __future__ import annotations

import contextlib
import io

import pytest
import yaml

from worldboot.cli import main
from worldboot.config import to_dict
from worldboot.demo import PRESETS, REWARD_MODELS, WORLD_MODELS, Demo, load_demo_config
from worldboot.demo.curve import snapshot_steps
from worldboot.demo.report import slug


def _cli_config(words: list[str]) -> dict:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*words, "--print-config"]) == 0
    return yaml.safe_load(printed.getvalue())


@pytest.mark.parametrize("preset", PRESETS)
def test_each_run_is_the_command_lines_config(preset, tmp_path):
    cfg = load_demo_config(preset, overrides=["rl.enabled=true", "dpo.enabled=true", "cdm.max_steps=7"])
    demo = Demo(cfg, tmp_path / "demo")
    demo.state = {"base": {"result": {"path": str(tmp_path / "base")}}}
    cache, seed = tmp_path / "demo" / "cache", f"seed={cfg.seed}"
    common = ["--base", str(tmp_path / "base")]
    recognition = ["--cache", str(cache / "recognition")] if cfg.recognition_per_subset else []
    cdm_snaps = [f"snapshot_steps={snapshot_steps(7, cfg.curve_points)}"] if cfg.curve_points > 1 else []
    words = {"CDM": ["train", "dynamics", "--config", cfg.cdm.config, *common, "--cache", str(cache / "labelled"),
                     *recognition, "--out", str(tmp_path / "demo" / "cdm"), *cfg.cdm.overrides, *cdm_snaps, seed]}
    for name in demo.trained_world_models():
        synthetic, weighting = WORLD_MODELS[name]
        caches = ["--cache", str(cache / "labelled")] + (["--cache", str(cache / "synthetic")] if synthetic else [])
        snaps = []  # the C-FT row draws the learning curve's snapshots
        if name == "C-FT" and cfg.curve_points > 1:
            cwm_steps = demo.train_config("CWM").max_steps
            snaps = [f"snapshot_steps={snapshot_steps(cwm_steps, cfg.curve_points)}"]
        words[name] = ["train", "world", "--config", cfg.cwm.config, *common, *caches,
                       "--out", str(tmp_path / "demo" / "cwm" / slug(name)),
                       *cfg.cwm.overrides, f"loss.weighting={weighting}", *snaps, seed]
    for key, (row, objective) in REWARD_MODELS.items():
        r = getattr(cfg, key)
        words[row] = ["train", "world-rl", "--config", r.config, "--base", str(tmp_path / "demo" / "cwm" / "cwm"),
                      *(w for p in r.prompts for w in ("--cache", str(cache / p))),
                      "--out", str(tmp_path / "demo" / "cwm" / slug(row)),
                      "--verifier", str(tmp_path / "demo" / "cdm"), "--objective", objective, *r.overrides, seed]
    assert set(words) == {"CDM", *demo.world_models()}
    for name, cli in words.items():
        ours = to_dict(demo.train_config(name))
        assert ours == _cli_config(cli), name
    assert demo.train_config("CDM").max_steps == 7  # the demo's word reached the run


def test_the_smoke_demo_trains_its_presets_as_they_are():
    """The smoke preset is the recipes unchanged: `worldboot train --config configs/demo/cdm.yaml`
    alone trains the smoke demo's CDM."""
    cfg = load_demo_config("smoke")
    assert cfg.cdm.overrides == [] and cfg.cwm.overrides == []
    assert not cfg.rl.enabled and not cfg.dpo.enabled


def test_a_run_without_the_ablations_trains_and_reports_c_ft_and_the_cwm_only(tmp_path):
    """``ablations: false`` (the default preset): only C-FT and the CWM are trained, predicted and
    listed in the report's data table, which says why the two rows are missing."""
    from worldboot.demo import ABLATIONS
    from worldboot.demo.report import data_table

    cfg = load_demo_config("default")
    assert not cfg.ablations and load_demo_config("paper").ablations
    demo = Demo(cfg, tmp_path / "demo")
    demo.state = {"base": {"result": {"path": str(tmp_path / "base")}},
                  "data": {"result": {"train": 10, "recognition": 5}}, "mine": {"result": {"selected": 3}}}
    assert demo.trained_world_models() == ["C-FT", "CWM"] == demo.world_models()
    table = "\n".join(data_table(demo))
    assert "| C-FT |" in table and "| CWM | labelled 10, synthetic 3 |" in table
    assert not any(f"| {row} |" in table for row in ABLATIONS) and "`ablations: false`" in table
    # The default preset's recognition samples share first frames, five to one; the table says so.
    assert "5 samples, each of another family, share a first frame" in table
    paper = Demo(load_demo_config("paper"), tmp_path / "paper")
    paper.state = demo.state
    assert "share a first frame" not in "\n".join(data_table(paper))


@pytest.mark.parametrize("threads", [0, 2])
def test_use_threads_sets_torchs_thread_count_from_the_config(threads, tmp_path):
    """`torch_threads` reaches torch whether the demo runs whole or a script runs its stages
    (scripts/cdm_recipe.py); 0 leaves torch's own count."""
    import torch

    before = torch.get_num_threads()
    try:
        Demo(load_demo_config("smoke", overrides=[f"torch_threads={threads}"]), tmp_path / "demo").use_threads()
        assert torch.get_num_threads() == (threads or before)
    finally:
        torch.set_num_threads(before)


def test_the_learning_curve_figure_labels_examples_in_thousands(tmp_path, monkeypatch):
    """The paper preset's CDM sees 192000 examples: plain tick labels ran together there."""
    import matplotlib.figure

    from worldboot.demo.curve import plot_curve

    seen: list[str] = []
    save = matplotlib.figure.Figure.savefig

    def record(fig, *args, **kwargs):
        fig.canvas.draw()
        seen.extend(t.get_text() for t in fig.axes[0].get_xticklabels())
        return save(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", record)
    plot_curve({"CDM": [[0, 0.0], [96000, 0.5], [192000, 0.7]], "C-FT": [[0, 0.0], [48000, 0.4]]},
               tmp_path / "curve.png")
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert "100k" in seen and "200k" in seen, seen
