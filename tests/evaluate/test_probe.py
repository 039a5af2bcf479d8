"""The preference probe on the tiny model: counts, ranges, report files, and that training moves it."""

from __future__ import annotations

import json

import pytest

from helpers import f32_atol, square_triplets
from worldboot.cli import main
from worldboot.data.negatives import NEGATIVE_KINDS
from worldboot.data.schema import Problems, read_manifest
from worldboot.evaluate.probe import ProbeConfig, probe, summarise


def test_probe_counts_and_percentages(tiny, tmp_path):
    triplets = square_triplets(tmp_path / "sq", 8, seed=3)
    rows = probe(triplets, tiny, ProbeConfig(batch_size=16))
    # Every triplet gets every kind in both directions (the squares world always has another action).
    assert len(rows) == len(triplets) * len(NEGATIVE_KINDS) * 2
    summary = summarise(rows)
    for cell in summary["cells"]:
        assert 0.0 <= cell["percent"] <= 100.0
        assert cell["preferred"] == sum(
            r["preferred"] for r in rows
            if r["direction"] == cell["direction"] and r["kind"] == cell["kind"]
            and (cell["subset"] == "all" or r["subset"] == cell["subset"])
        )
    all_cells = [c for c in summary["cells"] if c["subset"] == "all"]
    assert sum(c["n"] for c in all_cells) == len(rows)


def test_probe_scores_match_the_backbone(tiny, tmp_path):
    triplets = square_triplets(tmp_path / "sq", 4, seed=5)
    rows = probe(triplets, tiny, ProbeConfig(kinds=["copy_observation"], directions=["dynamics"], score="total"))
    t = triplets[0]
    codes = tiny.encode_images([__import__("worldboot.images", fromlist=["x"]).open_image(p) for p in (t.source, t.target)]).codes
    ref = tiny.score([tiny.dynamics_example(codes[0], codes[1], t.action)]).total.item()
    neg = tiny.score([tiny.dynamics_example(codes[0], codes[0], t.action)]).total.item()
    row = next(r for r in rows if r["id"] == t.id)
    # Totals: one-signed log-probabilities summed, so they bound them (helpers.f32_atol).
    assert row["reference"] == pytest.approx(ref, abs=f32_atol(abs(ref)))
    assert row["negative"] == pytest.approx(neg, abs=f32_atol(abs(neg)))
    assert row["preferred"] == (ref > neg)


def test_probe_cli_writes_report_and_reports_bad_images(tiny_dir, tmp_path, capsys):
    square_triplets(tmp_path / "sq", 6, seed=2)
    manifest = tmp_path / "sq" / "manifest.jsonl"
    lines = manifest.read_text().splitlines()
    broken = json.loads(lines[0])
    (tmp_path / "sq" / "broken.png").write_bytes(b"not a png")
    broken["id"], broken["target"] = "broken", "broken.png"
    manifest.write_text("\n".join([*lines, json.dumps(broken), "{not json"]) + "\n")
    out = tmp_path / "report"
    assert main(["probe", str(manifest), "--model", str(tiny_dir), "--out", str(out), "batch_size=16"]) == 0
    for name in ("preferences.jsonl", "probe.md", "probe.csv", "probe.json", "figure2_preferences.png",
                 "figure10_nll.png", "config.yaml", "meta.json", "problems.jsonl"):
        assert (out / name).is_file(), name
    problems = (out / "problems.jsonl").read_text()
    assert "broken.png" in problems and "manifest.jsonl" in problems
    text = capsys.readouterr()
    assert "world direction" in text.out and "random action" in text.out
    assert main(["probe", str(manifest), "--model", str(tiny_dir), "--out", str(out), "kinds=[nope]"]) == 2
    for empty in ("kinds=[]", "directions=[]"):  # an empty table and exit 0, before
        assert main(["probe", str(manifest), "--model", str(tiny_dir), "--out", str(tmp_path / "e"), empty]) == 2
        assert f"{empty[:-3]} is empty: name at least one of" in capsys.readouterr().err
    assert main(["probe", str(manifest), "--model", str(tmp_path / "no-model"), "--out", str(tmp_path / "e")]) == 2
    assert "model directory not found" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()  # refused before its folder is made


def test_trained_dynamics_model_prefers_references_more(tiny_dir, tmp_path):
    """A model trained on these trajectories prefers their true actions over random ones more often than the
    random base does. (Generalising to unseen squares needs the pre-trained world base of the demo; a random
    2-layer model only memorises, which is enough to show that the probe sees training.)"""
    import os

    from worldboot.data.tokenize import build_cache
    from worldboot.models import load_backbone
    from worldboot.train.config import DataSettings, OptimSettings, SourceSettings
    from worldboot.train.run import run_training

    os.environ["WORLDBOOT_NO_PROGRESS"] = "1"
    test = square_triplets(tmp_path / "test", 16, seed=12)
    train = test
    base = load_backbone(tiny_dir)
    build_cache(train, base, tmp_path / "cache", progress=False)
    from worldboot.train.sft_config import SFTConfig

    cfg = SFTConfig(
        task="dynamics", base_model=str(tiny_dir), out=str(tmp_path / "cdm"), max_steps=30, batch_size=8,
        micro_batch_size=8, save_every=0, eval_every=0, log_every=10,
        data=DataSettings(sources=[SourceSettings(cache=str(tmp_path / "cache"))], eval_fraction=0.0),
        optim=OptimSettings(lr=3e-3, warmup_steps=0),
    )
    cfg.lora.enabled = False
    run_training(cfg)
    pc = ProbeConfig(kinds=["random_action"], directions=["dynamics"], batch_size=16)
    before = summarise(probe(test, base, pc, Problems()))
    after = summarise(probe(test, load_backbone(tmp_path / "cdm"), pc, Problems()))

    def pct(s):
        return next(c["percent"] for c in s["cells"] if c["subset"] == "all")

    assert pct(after) > pct(before) and pct(after) >= 75.0, (pct(before), pct(after))
    assert read_manifest(tmp_path / "test" / "manifest.jsonl")


def test_a_vlm_folder_whose_config_does_not_fit_its_weights_is_refused(tmp_path):
    """transformers started a layer the weights lack at random, without a word."""
    from worldboot.errors import ModelError
    from worldboot.evaluate.vlm import VLMDynamicsScorer
    from worldboot.models.tiny import save_tiny_llava

    vlm_dir = save_tiny_llava(tmp_path / "llava")
    config = json.loads((vlm_dir / "config.json").read_text())
    config["text_config"]["num_hidden_layers"] += 1
    (vlm_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"config\.json asks for the tensor \S*layers\.\d+\.\S+ .*which \S+ lacks"):
        VLMDynamicsScorer(vlm_dir)
    (vlm_dir / "config.json").write_text("[1]")
    with pytest.raises(ModelError, match=r"config\.json: holds a JSON list"):
        VLMDynamicsScorer(vlm_dir)


def test_vlm_dynamics_probe_and_comparison_table(tiny_dir, tmp_path, capsys):
    """A transformers image-text-to-text model (a tiny LLaVA) in the dynamics direction beside our backbone."""
    import torch
    from PIL import Image

    from worldboot.evaluate.vlm import VLMDynamicsScorer
    from worldboot.models.tiny import save_tiny_llava

    vlm_dir = save_tiny_llava(tmp_path / "llava")
    scorer = VLMDynamicsScorer(vlm_dir)
    src, tgt = Image.new("RGB", (40, 40), "red"), Image.new("RGB", (40, 40), "blue")
    total, mean, n = scorer.score(src, tgt, "move the cube")
    # By hand: log-softmax of the model's logits over the action's tokens.
    prompt = scorer.processor(text=[scorer._prompt()], images=[[src, tgt]], return_tensors="pt")
    action = scorer.tokenizer(" move the cube", add_special_tokens=False)["input_ids"] + [scorer.tokenizer.eos_token_id]
    ids = torch.cat([prompt["input_ids"][0], torch.tensor(action)]).unsqueeze(0)
    with torch.no_grad():
        logits = scorer.model(input_ids=ids, pixel_values=prompt["pixel_values"]).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    expected = sum(logp[ids.shape[1] - len(action) - 1 + i, t].item() for i, t in enumerate(action))
    # the model's forward in another shape: f32_atol of the total (one-signed terms), and of the mean
    assert n == len(action) and total == pytest.approx(expected, abs=f32_atol(abs(expected)))
    assert mean == pytest.approx(expected / n, abs=f32_atol(abs(expected / n)))

    square_triplets(tmp_path / "sq", 5, seed=4)
    out = tmp_path / "cmp"
    code = main(["probe", str(tmp_path / "sq" / "manifest.jsonl"), "--model", f"tiny={tiny_dir}",
                 "--vlm", f"llava={vlm_dir}", "--out", str(out), "batch_size=16"])
    assert code == 0
    vlm_rows = [json.loads(line) for line in (out / "llava" / "preferences.jsonl").read_text().splitlines()]
    assert vlm_rows and {r["direction"] for r in vlm_rows} == {"dynamics"}
    assert len(vlm_rows) == 5 * len(NEGATIVE_KINDS)
    compare = (out / "compare.md").read_text()
    assert "| tiny |" in compare and "| llava |" in compare
