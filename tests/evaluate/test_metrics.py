"""Image metrics: L1 at a common size, CLIP-I/CLIP-T and DINO on tiny random models saved like
real ones, the metric columns of the report, and the tables' averages and counts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import f32_atol, square_triplets
from worldboot.errors import ModelError
from worldboot.evaluate.metrics import ClipScorer, DinoScorer, l1_distance
from worldboot.evaluate.tables import AVG, aggregate, render_csv, render_markdown

os.environ["WORLDBOOT_NO_PROGRESS"] = "1"


def _noise(seed: int, size=(48, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


# -- L1 ------------------------------------------------------------------------------------------


def test_l1_identical_is_zero_and_extremes_are_one():
    img = _noise(0)
    assert l1_distance(img, img.copy()) == 0.0
    black, white = Image.new("RGB", (30, 20), 0), Image.new("RGB", (30, 20), (255, 255, 255))
    assert l1_distance(black, white) == pytest.approx(1.0)
    grey = Image.new("RGB", (30, 20), (51, 51, 51))
    assert l1_distance(black, grey, size=16) == pytest.approx(0.2)


def test_l1_other_sizes_are_resized_to_a_common_geometry():
    flat = Image.new("RGB", (64, 64), (10, 200, 30))
    assert l1_distance(flat, flat.resize((200, 200))) == 0.0  # one flat colour: |x - x|, exactly 0
    # a non-square target: its centre square is compared (as Chameleon crops its input)
    wide = Image.new("RGB", (96, 64), (0, 0, 0))
    wide.paste(flat, (16, 0))
    assert l1_distance(flat, wide, crop="square") == 0.0
    assert l1_distance(flat, wide, crop="none") > 0.05


# -- tiny CLIP and DINOv2 saved as model directories ----------------------------------------------


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast

    words = ["move", "the", "red", "blue", "cube", "ball", "left", "right", "up", "down", "a", "photo", "of"]
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<eos>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>")
    config = CLIPConfig(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "eos_token_id": 2, "pad_token_id": 0},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("clip")
    CLIPModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2, image_size=32,
                          patch_size=8)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("dino")
    Dinov2Model(config).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_center_crop=True,
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return path


def test_clip_embeddings_match_the_model_own_similarity(clip_dir):
    from transformers import CLIPModel

    scorer = ClipScorer(clip_dir, batch_size=2)
    images = [_noise(i) for i in range(3)]
    emb = scorer.image_embeddings(images)
    # Unit vectors, and cosines <= 1 of the tiny CLIP's embeddings (forward only, under 2^14
    # roundings: helpers.TINY_ROUNDINGS) computed in another batch or order.
    rounding = f32_atol(1.0)
    assert emb.shape == (3, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=rounding, rtol=0)
    again = scorer.image_embeddings([images[1].copy()])
    assert float(emb[1] @ again[0]) == pytest.approx(1.0, abs=rounding)  # CLIP-I of identical images
    texts = ["move the red cube left", "a photo of a ball"]
    temb = scorer.text_embeddings(texts)
    # CLIP-T equals CLIPModel's own logits divided by its temperature
    model = CLIPModel.from_pretrained(clip_dir).eval()
    enc = scorer.tokenizer(texts, padding=True, return_tensors="pt")
    pixels = scorer.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values=pixels)
    expected = out.logits_per_image / model.logit_scale.exp()
    assert torch.allclose(emb @ temb.T, expected, atol=rounding, rtol=0)


def test_dino_cls_embeddings(dino_dir):
    from transformers import Dinov2Model

    scorer = DinoScorer(dino_dir)
    images = [_noise(10), _noise(11)]
    emb = scorer.image_embeddings(images)
    assert emb.shape == (2, 32)
    pixels = scorer.processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        cls = Dinov2Model.from_pretrained(dino_dir).eval()(pixel_values=pixels).pooler_output
    # unit vectors: elements <= 1, the tiny DINOv2's forward in another batch (helpers.f32_atol)
    assert torch.allclose(emb, torch.nn.functional.normalize(cls, dim=-1), atol=f32_atol(1.0), rtol=0)


def test_model_dirs_are_checked(tmp_path, clip_dir):
    with pytest.raises(ModelError, match="no config.json"):
        ClipScorer(tmp_path)
    (tmp_path / "config.json").write_text((clip_dir / "config.json").read_text())
    with pytest.raises(ModelError, match="preprocessor_config.json"):
        DinoScorer(tmp_path)
    # A damaged config.json, or a DINOv2 folder given as CLIP: one line naming the file.
    import json
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(clip_dir, broken)
    (broken / "config.json").write_text("[1]")
    with pytest.raises(ModelError, match=r"broken/config\.json: holds a JSON list"):
        ClipScorer(broken)
    config = json.loads((clip_dir / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"model_type": "dinov2"}))
    with pytest.raises(ModelError, match=r"config\.json: model_type 'dinov2', where a clip model is needed"):
        ClipScorer(broken)


def test_report_with_clip_and_dino_columns(tmp_path, clip_dir, dino_dir, capsys):
    from worldboot.cli import main

    triplets = square_triplets(tmp_path / "bench", 4, seed=1)
    pred = tmp_path / "pred"
    pred.mkdir()
    for t in triplets:
        Image.open(t.target).save(pred / f"{t.id}.png")
    out = tmp_path / "out"
    assert main(["evaluate", str(pred), "--bench", str(tmp_path / "bench" / "manifest.jsonl"), "--out", str(out),
                 "--judge", "none", "--clip", str(clip_dir), "--dino", str(dino_dir)]) == 0
    rows = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    pred_rows = [r for r in rows if r["model"] == "pred"]
    rounding = f32_atol(1.0)  # cosines <= 1 of the tiny models' embeddings, in another batch (helpers.f32_atol)
    assert all(r["clip_i"] == pytest.approx(1.0, abs=rounding) and r["dino"] == pytest.approx(1.0, abs=rounding)
               for r in pred_rows)
    assert all(-1.0 <= r["clip_t"] <= 1.0 for r in rows)
    # Copy's CLIP-I is the cosine of source and target, computed independently here
    scorer = ClipScorer(clip_dir)
    t = triplets[0]
    emb = scorer.image_embeddings([Image.open(t.source).convert("RGB"), Image.open(t.target).convert("RGB")])
    copy = next(r for r in rows if r["model"] == "Copy" and r["id"] == t.id)
    assert copy["clip_i"] == pytest.approx(float(emb[0] @ emb[1]), abs=rounding)
    md = capsys.readouterr().out
    assert "## CLIP-I (↑)" in md and "## CLIP-T (↑)" in md and "## DINO (↑)" in md
    assert "CLIP-I and CLIP-T skipped" not in md and "DINO skipped" not in md
    assert "not comparable" in md  # CLIP-T's text differs from the paper's BLIP caption


# -- tables ---------------------------------------------------------------------------------------


def test_aggregate_macro_average_and_counts():
    rows = [
        {"model": "A", "subset": "x", "judge_score": 2.0},
        {"model": "A", "subset": "x", "judge_score": 4.0},
        {"model": "A", "subset": "y", "judge_score": 9.0},
        {"model": "A", "subset": "y", "judge_score": None},
        {"model": "B", "subset": "x", "judge_score": 1.0},
    ]
    summary = aggregate(rows, ["A", "B"], ["x", "y"], {"x": 2, "y": 2})
    a = summary["judge_score"]["A"]
    assert a["x"] == {"mean": 3.0, "scored": 2, "total": 2}
    assert a["y"] == {"mean": 9.0, "scored": 1, "total": 2}
    assert a[AVG] == {"mean": 6.0, "scored": 3, "total": 4}  # mean of subset means, as the paper
    b = summary["judge_score"]["B"]
    assert b["y"]["mean"] is None and b[AVG]["mean"] == 1.0 and b[AVG]["scored"] == 1
    md = render_markdown(summary, ["A", "B"], ["x", "y"], "judge_score")
    assert "| A | 3.000 | 9.000 (1/2) | 6.000 (3/4) |" in md
    assert "| B | 1.000 (1/2) | – | 1.000 (1/4) |" in md
    assert "| A | 2/2 | 1/2 | 3/4 |" in md
    csv_text = render_csv(summary, ["A", "B"], ["x", "y"])
    assert "judge_score,A,3,9,6,2,1,3,2,2,4" in csv_text
