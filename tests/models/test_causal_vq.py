"""The second backbone family, a causal LM plus a VQGAN (as Liquid-7B: Gemma with image codes at
an offset), on a tiny instance from real configs: the Backbone Protocol, saving and loading, and
every stage through its command (probe, tokenize with Eq. 2 weights, LoRA CDM and CWM, annotate,
best-of-N with a CDM of the same family, rollout, evaluate)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from helpers import f32_atol, square_triplets
from mining.test_annotate import make_pairs
from worldboot.cli import main
from worldboot.errors import ModelError
from worldboot.models import load_backbone
from worldboot.models.causal_vq import save_tiny_causal_vq
from worldboot.runs import read_rows

pytestmark = pytest.mark.timeout(900)
TRAIN = ["max_steps=6", "batch_size=4", "micro_batch_size=4", "save_every=0", "eval_every=0", "log_every=1",
         "optim.lr=5e-3", "optim.warmup_steps=0", "data.eval_fraction=0.1"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_causal_vq(tmp_path_factory.mktemp("cvq") / "model")


def test_the_protocol_on_a_gemma_with_codes_at_an_offset(model_dir):
    bb = load_backbone(model_dir)
    assert bb.family == "causal-vq" and type(bb.core).__name__ == "WorldGemmaForCausalLM"
    assert int(bb.code_to_token[0]) == bb.image_token_offset and bb.core.config.vocab_size == bb.image_token_offset + 512
    img = Image.new("RGB", (64, 64), (200, 30, 30))
    enc = bb.encode_images([img, img])
    assert enc.codes.shape == (2, bb.image_seq_len) and enc.features.shape[:2] == (2, bb.image_seq_len)
    ex = bb.world_example(enc.codes[0], "push it", enc.codes[1])
    assert ex.input_ids[ex.completion_start - 1] == bb.boi_id
    assert ex.input_ids[ex.completion_start:] == bb.code_to_token[enc.codes[1]].tolist()
    # The batched verifier path equals plain scoring; sampling gives exactly L codes.
    dyn = [bb.dynamics_example(enc.codes[0], enc.codes[1], a) for a in ("push it", "pull it left")]
    plain = bb.score(dyn).total  # totals of one-signed terms bound them (helpers.f32_atol)
    torch.testing.assert_close(bb.score_shared_prefix(dyn).total, plain, atol=f32_atol(plain.abs().max()), rtol=0)
    codes = bb.generate_images([bb.world_example(enc.codes[0], "push it")], 3, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (1, 3, bb.image_seq_len) and int(codes.max()) < bb.codebook_size
    assert bb.decode_codes(codes[0])[0].size == (64, 64)
    # Saved and loaded again: the same scores.
    again = load_backbone(model_dir)
    torch.testing.assert_close(again.score(dyn).total, bb.score(dyn).total, atol=0, rtol=0)
    assert again.tokenizer_fingerprint() == bb.tokenizer_fingerprint()


def test_a_bad_worldboot_json_is_one_line(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    meta = json.loads((broken / "worldboot.json").read_text())
    del meta["boi_token"]
    (broken / "worldboot.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="lacks boi_token"):
        load_backbone(broken)
    meta["boi_token"], meta["family"] = "<boi>", "mystery"
    (broken / "worldboot.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unknown model family 'mystery'"):
        load_backbone(broken)


def test_every_stage_runs_on_the_second_family(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    square_triplets(data, 12, seed=4)
    manifest = str(data / "manifest.jsonl")
    assert main(["info", "--model", str(model_dir)]) == 0
    assert "causal-vq" in capsys.readouterr().out
    assert main(["probe", manifest, "--model", str(model_dir), "--out", str(tmp_path / "probe"), "batch_size=16"]) == 0
    cache = tmp_path / "cache"
    assert main(["tokenize", manifest, "--backbone", str(model_dir), "--out", str(cache)]) == 0
    from worldboot.data.cache import TokenCache

    first_id = json.loads((data / "manifest.jsonl").read_text().splitlines()[0])["id"]
    weights = TokenCache(cache).weights(first_id)
    # Eq. 2 from this VQ's features: the random encoder's attention spreads change everywhere,
    # but most where the square moved
    assert weights.shape == (64,) and bool(torch.isfinite(weights).all()) and float(weights.max()) > 2 * float(weights.median())
    for task, out in (("dynamics", "cdm"), ("world", "cwm")):
        assert main(["train", task, "--base", str(model_dir), "--cache", str(cache), "--out", str(tmp_path / out),
                     *TRAIN]) == 0
        assert (tmp_path / out / "adapter" / "adapter_model.safetensors").is_file()  # LoRA, as the paper
    pred = tmp_path / "pred"
    rows = annotate_and_generate(tmp_path, manifest, pred)
    assert not rows[0]["verifier_reencoded"]  # the same family and tokenizer: no re-encoding
    source = rows[0]["source"] if rows[0]["source"].startswith("/") else str(data / rows[0]["source"])
    assert main(["rollout", source,
                 "--world", str(tmp_path / "cwm"), "--action", "move the red square left", "--action", "and back",
                 "--out", str(tmp_path / "roll")]) == 0
    assert (tmp_path / "roll" / "step-2.png").is_file()
    assert main(["evaluate", str(pred), "--bench", manifest, "--out", str(tmp_path / "report"), "judge.type=none",
                 "metrics.l1_size=64"]) == 0
    table = json.loads((tmp_path / "report" / "table.json").read_text())
    assert "pred" in json.dumps(table)


def annotate_and_generate(tmp_path, manifest: str, pred) -> list[dict]:
    """With ``tmp_path/cdm`` and ``tmp_path/cwm`` trained: annotate two key-frame pairs with the
    CDM, then best-of-3 predictions of the manifest's 12 triplets, the CDM as verifier; the rows."""
    pairs = make_pairs(tmp_path / "kf", videos=1, frames=3)
    assert main(["annotate", str(pairs), "--cdm", str(tmp_path / "cdm"), "--out", str(tmp_path / "ann"),
                 "--batch-size", "2", "--max-new-tokens", "4", "--no-progress"]) == 0
    assert len(read_rows(tmp_path / "ann" / "annotated.jsonl")) == 2
    assert main(["generate", manifest, "--world", str(tmp_path / "cwm"), "--verifier", str(tmp_path / "cdm"),
                 "--best-of", "3", "--out", str(pred), "--no-progress"]) == 0
    rows = read_rows(pred / "predictions.jsonl")
    assert len(rows) == 12 and all(len(r["candidates"]) == 3 and r["candidates"][0]["score"] is not None for r in rows)
    return rows


def test_an_llm_and_a_taming_vqgan_assemble_into_a_model(tmp_path, capsys):
    """`worldboot convert causal-vq`: the Liquid-7B path (its LM folder + Anole's tokenizer/)."""
    import yaml

    from models.test_vq import TAMING_PARAMS
    from worldboot.models.causal_vq import tiny_causal_vq

    bb = tiny_causal_vq(seed=3)
    llm = tmp_path / "llm"
    bb.core.save_pretrained(llm)
    bb.tokenizer.save_pretrained(llm)
    vq = tmp_path / "vqgan"
    vq.mkdir()
    sd = dict(bb.vqgan.vq.state_dict())
    sd.update({f"decoder.{k}": v for k, v in bb.vqgan.decoder.state_dict().items()})
    torch.save({"state_dict": sd}, vq / "vqgan.ckpt")
    (vq / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    args = ["convert", "causal-vq", str(llm), "--vqgan", str(vq), "--boi", "<boi>", "--eoi", "<eoi>"]
    offset = str(bb.image_token_offset)
    capsys.readouterr()
    assert main([*args, "--image-token-offset", str(bb.image_token_offset + 5), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit its vocabulary" in err[0] and not (tmp_path / "x").exists()
    assert main([*args[:-4], "--boi", "<nope>", "--eoi", "<eoi>", "--image-token-offset", offset,
                 "--out", str(tmp_path / "x")]) == 2
    assert "has no token '<nope>'" in capsys.readouterr().err
    for words, says in (
        (["--image-token-offset", "0", "--out", str(tmp_path / "y")], "take the id"),
        (["--image-token-offset", offset, "--image-size", "-64", "--out", str(tmp_path / "y")], "--image-size"),
        (["--image-token-offset", offset, "--out", str(vq / "model")], "lies inside the input"),
    ):
        assert main([*args, *words]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "y").exists()
    assert main([*args[:-4], "--boi", "<eoi>", "--eoi", "<eoi>", "--image-token-offset", offset, "--out", str(tmp_path / "y")]) == 2
    assert "two different markers" in capsys.readouterr().err
    assert main([*args, "--image-token-offset", offset, "--out", str(tmp_path / "model")]) == 0
    assert main([*args, "--image-token-offset", offset, "--out", str(tmp_path / "model")]) == 2  # no mixing two models
    assert "not an empty folder" in capsys.readouterr().err
    loaded = load_backbone(tmp_path / "model")
    img = Image.new("RGB", (64, 64), (30, 30, 200))
    codes = bb.encode_images([img]).codes
    torch.testing.assert_close(loaded.encode_images([img]).codes, codes, atol=0, rtol=0)
    ex = [bb.world_example(codes[0], "push it", codes[0])]
    torch.testing.assert_close(loaded.score(ex).total, bb.score(ex).total, atol=0, rtol=0)  # the same weights, same steps
    assert (tmp_path / "model" / "config.json").is_symlink()  # the LM's weights are linked, not copied
