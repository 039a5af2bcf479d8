"""The third backbone family, Emu3, on transformers' own classes: a tiny Emu3 built from the real
config's shape (Emu3's VQ architecture, its layout tokens and ``<|visual token…|>`` names) with
random weights. Its image layout, vocabulary mapping, grids that are not square, sampling with
the row ends forced, fidelity to ``Emu3ForConditionalGeneration``'s own paths, and every stage
through its command (probe, tokenize, LoRA CDM and CWM with the weighted loss, annotate,
best-of-N, rollout, world-rl, evaluate)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image

from helpers import F32_U, f32_atol, square_triplets
from models.test_causal_vq import annotate_and_generate
from worldboot.cli import main
from worldboot.errors import ModelError
from worldboot.models import load_backbone
from worldboot.models.emu3 import parse_shape
from worldboot.models.tiny import build_tiny_emu3, save_tiny_emu3

pytestmark = pytest.mark.timeout(900)
TRAIN = ["max_steps=4", "batch_size=4", "micro_batch_size=4", "save_every=0", "eval_every=0", "log_every=1",
         "optim.lr=5e-3", "optim.warmup_steps=0", "data.eval_fraction=0.1"]


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_emu3(seed=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_emu3(tmp_path_factory.mktemp("emu3") / "model")


def _image(colour=(200, 30, 30), size=(64, 64)) -> Image.Image:
    img = Image.new("RGB", size, (128, 128, 128))
    img.paste(colour, (16, 16, 40, 40))
    return img


def test_the_image_layout_is_emu3s(tiny):
    """An image is <|image start|> rows*cols <|image token|>, each row of codes and a row end,
    then <|extra_201|> <|image end|>, as Emu3Processor writes it; row ends carry no label."""
    tok = tiny.tokenizer
    codes = tiny.encode_images([_image()]).codes[0]
    seq = tiny._image(codes)
    rows, cols = tiny.grid_hw
    assert (rows, cols) == (8, 8)
    opening = tok.convert_tokens_to_ids(["<|image start|>"]) + tok("8*8", add_special_tokens=False)["input_ids"] + \
        tok.convert_tokens_to_ids(["<|image token|>"])
    assert seq[: len(opening)] == opening
    assert seq[-2:] == tok.convert_tokens_to_ids(["<|extra_201|>", "<|image end|>"])
    body = seq[len(opening) : -2]
    eol = tok.convert_tokens_to_ids("<|extra_200|>")
    assert len(body) == rows * (cols + 1) and body[cols :: cols + 1] == [eol] * rows
    ex = tiny.world_example(codes, "push it", codes)
    assert ex.input_ids[: ex.completion_start][-len(opening) :] == opening  # the prompt ends with the opening
    labels = ex.labels[ex.completion_start :]
    assert sum(lab != -100 for lab in labels) == rows * cols and labels[cols :: cols + 1] == [-100] * rows
    # The dynamics layout: two whole images, then the question, then the action.
    dyn = tiny.dynamics_example(codes, codes, "push it")
    assert dyn.input_ids[1 : 1 + len(seq)] == seq and dyn.input_ids[1 + len(seq) : 1 + 2 * len(seq)] == seq


def test_codes_map_to_their_visual_tokens(tiny):
    """Code k is the vocabulary's <|visual tokenNNNNNN|> for k (config.vocabulary_map, read
    through transformers' Emu3ImageVocabularyMapping), and back."""
    tok = tiny.tokenizer
    for k in (0, 1, 137, tiny.codebook_size - 1):
        assert int(tiny.code_to_token[k]) == tok.convert_tokens_to_ids(f"<|visual token{k:06d}|>")
    assert torch.equal(tiny.core.model.vocabulary_mapping.bpe2img_mapping_tensor[tiny.code_to_token],
                       torch.arange(tiny.codebook_size, dtype=torch.int))
    # Text decoding never draws a code nor a layout token; the grid's digits stay text.
    from worldboot.models.sampling import banned_text_ids

    banned = set(banned_text_ids(tiny).tolist())
    assert set(tiny.code_to_token.tolist()) <= banned and set(tiny.layout_ids()) <= banned
    assert not set(tok("8*8", add_special_tokens=False)["input_ids"]) & banned


def test_a_grid_that_is_not_square_is_kept_by_the_prediction():
    """A 48x64 model (6 rows of 8 codes): sources are scaled to cover it and centre-cropped, the
    prompt names the grid 6*8, and every sample has 6 rows with their row ends, decoding to 48x64."""
    bb = build_tiny_emu3(seed=2, image_shape=(48, 64))
    assert bb.grid_hw == (6, 8) and bb.image_seq_len == 48 and bb.image_shape == (48, 64)
    enc = bb.encode_images([_image(size=(160, 100)), _image(size=(64, 64))])
    assert enc.codes.shape == (2, 48) and enc.features.shape[:2] == (2, 48)
    prompt = bb.world_example(enc.codes[0], "push it")
    digits = bb.tokenizer("6*8", add_special_tokens=False)["input_ids"]
    assert prompt.input_ids[-len(digits) - 1 : -1] == digits
    codes = bb.generate_images([prompt], 2, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (1, 2, 48)
    assert bb.decode_codes(codes[0])[0].size == (64, 48)
    with pytest.raises(ModelError, match="multiples of its 8-pixel patch"):
        build_tiny_emu3(image_shape=(50, 64))
    assert parse_shape("384x512") == (384, 512) and parse_shape("512") == (512, 512)
    with pytest.raises(ModelError, match="height x width"):
        parse_shape("wide")


def test_sampling_forces_the_row_ends_and_scores_what_it_drew(tiny):
    """The sampler feeds each row's end with its last code: a sample's sequence, scored again
    through the model, has the log-probabilities the sampler drew from (the row ends in place)."""
    codes = tiny.encode_images([_image(), _image((30, 30, 200))]).codes
    prompt = tiny.world_example(codes[0], "push it")
    gen = torch.Generator().manual_seed(3)
    drawn = tiny.generate_images([prompt], 2, generator=gen)[0]
    assert int(drawn.max()) < tiny.codebook_size and int(drawn.min()) >= 0
    # Greedy sampling equals the argmax of the teacher-forced logits at every code position.
    from worldboot.models.backbone import SamplingConfig

    greedy = tiny.generate_images([prompt], 1, sampling=SamplingConfig(temperature=0.0))[0, 0]
    ex = tiny.world_example(codes[0], "push it", greedy)
    logp, logits, _ = tiny.completion_logprobs(tiny.collate([ex]))
    image_logits = logits[:, tiny.code_to_token]
    assert torch.equal(image_logits.argmax(-1), greedy)


def test_encode_decode_and_first_logits_equal_transformers_own_paths(tiny):
    """Against Emu3ForConditionalGeneration's own methods on the same weights:

    * codes: ``model.get_image_tokens`` (the VQ's encode, then the vocabulary mapping with the row
      ends) equals our image body token for token (the same modules on the same input: exact);
    * decoding: ``model.decode_image_tokens`` equals our decode (exact, the same modules), up to
      our conversion back to [-1, 1] from the processor's normalisation, which is exact for
      mean = std = 0.5 but for one rounding of each of its two float32 operations;
    * the first step of image generation: our logits over the image tokens equal the columns of
      transformers' full forward, within the float32 rounding of a dot product of ``hidden``
      terms bounded by the sum of their magnitudes (the two compute the head's matrix product
      in different shapes, so in different orders)."""
    core = tiny.core
    img = _image()
    pixels = tiny.preprocess([img])
    rows, cols = tiny.grid_hw
    codes = tiny.encode_images([img]).codes
    theirs = core.model.get_image_tokens(tiny.vqgan.normalise(pixels), torch.tensor([[64, 64]]))
    assert theirs.tolist() == tiny._image_body(codes[0])[0]
    ours = tiny.vqgan.decode(codes)
    tail = torch.tensor([[tiny.eof_id, tiny.eoi_id, tiny.eos_id]])
    decoded = core.model.decode_image_tokens(torch.cat([theirs.unsqueeze(0), tail], 1), rows, cols)
    torch.testing.assert_close(ours, decoded.float().clamp(-1, 1), atol=4 * F32_U, rtol=0)
    prompt = tiny.world_example(codes[0], "push it")
    ids = torch.tensor([prompt.input_ids])
    with torch.no_grad():
        full = Emu3ForConditionalGenerationForward(core, ids)
        _, first, _, _ = tiny._prefill([prompt], tiny.image_vocab())
        last = core.model(input_ids=ids).last_hidden_state[0, -1]
    expected = full[tiny.code_to_token]
    scale = float((last.abs() @ core.lm_head.weight.detach().abs().T).max())  # sum of |h_i w_i| bounds each logit's terms
    torch.testing.assert_close(first[0], expected, atol=f32_atol(scale, core.config.text_config.hidden_size), rtol=0)


def Emu3ForConditionalGenerationForward(core, ids):  # noqa: N802 (names the class whose forward it runs)
    """Last-position logits of transformers' own ``Emu3ForConditionalGeneration.forward``."""
    from transformers import Emu3ForConditionalGeneration

    return Emu3ForConditionalGeneration.forward(core, input_ids=ids).logits[0, -1].float()


def test_a_folder_that_is_not_emu3_is_refused_in_one_line(model_dir, tmp_path):
    import shutil

    broken = tmp_path / "m"
    shutil.copytree(model_dir, broken)
    original = (broken / "config.json").read_text()
    config = json.loads(original)
    del config["vocabulary_map"]
    (broken / "config.json").write_text(json.dumps(config))
    (broken / "worldboot.json").unlink()
    with pytest.raises(ModelError, match=r"config.json: no vocabulary_map"):
        load_backbone(broken)
    (broken / "config.json").write_text(original)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot load Emu3 model .*model.safetensors is not a readable safetensors file"):
        load_backbone(broken)


def test_a_transformers_emu3_folder_loads_without_worldboot_json(model_dir, tmp_path, capsys):
    """The released layout (Emu3-Gen-hf): transformers' files only; worldboot's default shape,
    or --image-size; the processor's mean and std are read from preprocessor_config.json."""
    import shutil

    plain = tmp_path / "hf"
    shutil.copytree(model_dir, plain)
    (plain / "worldboot.json").unlink()
    (plain / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5] * 3, "image_std": [0.5] * 3}))
    bb = load_backbone(plain, image_size="64")
    saved = load_backbone(model_dir)
    assert bb.family == "emu3" and bb.grid_hw == (8, 8)
    assert bb.tokenizer_fingerprint() == saved.tokenizer_fingerprint()
    img = _image()
    assert torch.equal(bb.encode_images([img]).codes, saved.encode_images([img]).codes)
    assert load_backbone(plain).image_shape == (512, 512)
    assert main(["info", "--model", str(plain)]) == 0  # `worldboot info` names the family
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps a long path
    assert ": emu3, " in printed and "4096 tokens per image" in printed


def test_every_stage_runs_on_emu3(model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    square_triplets(data, 12, seed=4)
    manifest = str(data / "manifest.jsonl")
    assert main(["info", "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert all(f"  {family}:" in out for family in ("chameleon", "causal-vq", "emu3"))
    assert "emu3, " in out and "64-px images, 64 tokens per image" in out
    assert main(["probe", manifest, "--model", str(model_dir), "--out", str(tmp_path / "probe"), "batch_size=16"]) == 0
    cache = tmp_path / "cache"
    assert main(["tokenize", manifest, "--backbone", str(model_dir), "--out", str(cache)]) == 0
    for task, out_dir, extra in (("dynamics", "cdm", []), ("world", "cwm", ["loss.weighting=l2", "loss.uniform_mix=0.3"])):
        assert main(["train", task, "--base", str(model_dir), "--cache", str(cache), "--out", str(tmp_path / out_dir),
                     *TRAIN, *extra]) == 0
        assert (tmp_path / out_dir / "adapter" / "adapter_model.safetensors").is_file()  # LoRA, as the paper
    from safetensors.torch import load_file

    adapted = load_file(str(tmp_path / "cwm" / "adapter" / "adapter_model.safetensors"))
    assert adapted and not any("vqmodel" in k for k in adapted)  # the VQ's q_proj is never adapted
    pred = tmp_path / "pred"
    rows = annotate_and_generate(tmp_path, manifest, pred)
    source = rows[0]["source"] if rows[0]["source"].startswith("/") else str(data / rows[0]["source"])
    assert main(["rollout", source, "--world", str(tmp_path / "cwm"), "--action", "move the red square left",
                 "--out", str(tmp_path / "roll")]) == 0
    assert (tmp_path / "roll" / "step-1.png").is_file()
    assert main(["train", "world-rl", "--base", str(tmp_path / "cwm"), "--verifier", str(tmp_path / "cdm"),
                 "--cache", str(cache), "--out", str(tmp_path / "grpo"), "--group-size", "2", "max_steps=2",
                 "batch_size=2", "micro_batch_size=2", "save_every=0", "eval_every=0", "log_every=1",
                 "data.eval_fraction=0.0"]) == 0
    assert (tmp_path / "grpo" / "adapter" / "adapter_model.safetensors").is_file()
    assert main(["evaluate", str(pred), "--bench", manifest, "--out", str(tmp_path / "report"), "judge.type=none",
                 "metrics.l1_size=64"]) == 0
    assert "pred" in (tmp_path / "report" / "table.json").read_text()


def test_convert_emu3_pins_the_shape_and_refuses_what_does_not_fit(model_dir, tmp_path, capsys):
    """`worldboot convert emu3`: a transformers-format folder linked at a chosen shape; BAAI's
    original layout, a vocabulary without every code's token and a bad shape refused in one line
    naming the file, nothing written."""
    import shutil

    hf = tmp_path / "hf"
    shutil.copytree(model_dir, hf)
    (hf / "worldboot.json").unlink()
    assert main(["convert", "emu3", str(hf), "--image-size", "48x64", "--out", str(tmp_path / "wb")]) == 0
    bb = load_backbone(tmp_path / "wb")
    assert bb.grid_hw == (6, 8) and (tmp_path / "wb" / "model.safetensors").is_symlink()
    config = json.loads((hf / "config.json").read_text())
    cases = []
    baai = dict(config, model_type="Emu3", auto_map={"AutoModelForCausalLM": "modeling_emu3.Emu3ForCausalLM"})
    cases.append((baai, "BAAI's original Emu3 layout"))
    short = dict(config, vocabulary_map={k: v for k, v in config["vocabulary_map"].items() if "visual token000007" not in k})
    cases.append((short, "names 511 visual tokens for 512 codes"))
    cases.append((dict(config, model_type="llama"), "model_type 'llama' is not an Emu3 model"))
    for i, (bad, says) in enumerate(cases):
        folder = tmp_path / f"bad{i}"
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(bad))
        capsys.readouterr()
        assert main(["convert", "emu3", str(folder), "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and str(folder / "config.json") in err[0], err
    assert main(["convert", "emu3", str(hf), "--image-size", "50x64", "--out", str(tmp_path / "x")]) == 2
    assert "multiples of its 8-pixel patch" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_plan_sizes_emu3_with_its_own_layout_and_layers(model_dir, capsys):
    """`worldboot plan` on an Emu3 base: an image's tokens are the backbone's own (the grid's
    text, row ends, two closing tokens), and the measured layer keeps what a real forward of the
    tiny Emu3's text layer keeps, bytes for bytes (eager attention, float32)."""
    from worldboot.models import load_backbone
    from worldboot.train.plan import _param_keys, _saved_bytes, layer_activation_bytes, model_config
    from worldboot.train.resolve import resolve_train_config

    bb = load_backbone(model_dir)
    config, image_tokens, _ = model_config(str(model_dir))
    assert image_tokens == len(bb.image_open()) + bb.image_body_len + len(bb.image_close())
    assert main(["plan", "--config", "configs/emu3/cwm.yaml", "--base", str(model_dir), "--gpus", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # A world example's loss positions are its labelled tokens: the target's codes, not its row ends.
    codes = bb.encode_images([_image()]).codes
    labels = bb.world_example(codes[0], "paint it", codes[0]).labels
    assert out["sequence"] == 2 * image_tokens + 64 + 2
    assert out["loss_positions"] == sum(t != -100 for t in labels) < bb.image_body_len
    assert out["trainable_params"] < out["total_params"]  # LoRA, the VQ left out
    cfg = resolve_train_config("configs/emu3/cwm.yaml", [f"base_model={model_dir}"])
    no_lora = dataclasses.replace(cfg, lora=dataclasses.replace(cfg.lora, enabled=False))  # as the real model
    planned = layer_activation_bytes(config, no_lora, 40, torch.float32, attention="eager")
    model = bb.model
    model.config.text_config._attn_implementation = "eager"
    model.train()
    text = model.model.text_model
    layer = text.layers[0]
    x = torch.randn(1, 40, config.text_config.hidden_size, requires_grad=True)
    pos = torch.arange(40)[None]
    pe = text.rotary_emb(x, pos)
    real = _saved_bytes(lambda: layer(x, attention_mask=None, position_embeddings=pe, position_ids=pos),
                        _param_keys(model))
    assert planned == real > 0