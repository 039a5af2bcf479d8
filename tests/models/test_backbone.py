"""The Chameleon backbone: tokenizer round trip, unmasked image logits, scoring, generation, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.chameleon.modeling_chameleon import ChameleonForConditionalGeneration

from helpers import f32_atol
from worldboot.models.backbone import Backbone, SamplingConfig
from worldboot.models.chameleon import load_chameleon


def _images(n: int, seed: int = 0, size: tuple[int, int] = (80, 64)) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(n)]


def test_implements_protocol(tiny):
    assert isinstance(tiny, Backbone)
    assert tiny.image_seq_len == 64 and tiny.codebook_size == 512


def test_encode_decode_shapes(tiny):
    enc = tiny.encode_images(_images(3))
    assert enc.codes.shape == (3, 64)
    assert enc.features.shape == (3, 64, 64)
    assert int(enc.codes.min()) >= 0 and int(enc.codes.max()) < 512
    out = tiny.decode_codes(enc.codes)
    assert len(out) == 3 and all(img.size == (64, 64) and img.mode == "RGB" for img in out)


def test_features_are_pre_quantisation(tiny):
    # The codes must be the nearest codebook entries of the returned features.
    enc = tiny.encode_images(_images(1))
    book = tiny.vqgan.vq.quantize.embedding.weight.detach()
    nearest = torch.cdist(enc.features[0], book).argmin(dim=1)
    assert torch.equal(nearest, enc.codes[0])


def test_stock_mask_is_gone(tiny):
    enc = tiny.encode_images(_images(2))
    ex = tiny.world_example(enc.codes[0], "move the cube left", enc.codes[1])
    score = tiny.score([ex])
    assert torch.isfinite(score.total).all() and score.count.item() == 64
    # transformers' own class masks image logits: the same weights give -inf there.
    stock = ChameleonForConditionalGeneration(tiny.core.config)
    stock.load_state_dict(tiny.core.state_dict())
    ids = torch.tensor([ex.input_ids])
    logits = stock(input_ids=ids).logits
    image_ids = tiny.code_to_token
    assert (logits[0, -1, image_ids] <= torch.finfo(logits.dtype).min / 2).all()


def test_score_matches_hand_computed_log_softmax(tiny):
    enc = tiny.encode_images(_images(2))
    ex = tiny.dynamics_example(enc.codes[0], enc.codes[1], "push the red cube")
    ids = torch.tensor([ex.input_ids])
    with torch.no_grad():
        logits = tiny.core(input_ids=ids).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    expected = sum(
        logp[t - 1, ex.input_ids[t]].item() for t in range(len(ex.input_ids)) if ex.labels[t] != -100
    )
    got = tiny.score([ex])
    # the same forward in another shape; a total of one-signed terms bounds them (helpers.f32_atol)
    rounding = f32_atol(abs(expected))
    assert got.total.item() == pytest.approx(expected, abs=rounding)
    n = sum(1 for lab in ex.labels if lab != -100)
    assert got.count.item() == n and got.mean.item() == pytest.approx(expected / n, abs=rounding / n)


def test_score_is_padding_safe(tiny):
    enc = tiny.encode_images(_images(3))
    short = tiny.dynamics_example(enc.codes[0], enc.codes[1], "left")
    long = tiny.dynamics_example(enc.codes[1], enc.codes[2], "move the small blue circle further away please")
    world = tiny.world_example(enc.codes[0], "open it", enc.codes[2])
    alone = [tiny.score([e]).total.item() for e in (short, long, world)]
    batched = tiny.score([short, long, world], batch_size=3).total.tolist()
    assert batched == pytest.approx(alone, abs=f32_atol(max(map(abs, alone))))  # padded: another shape


def test_shared_prefix_scores_equal_plain_scores(tiny):
    """The verifier's way (source prefix run once, cache repeated) gives score()'s numbers."""
    enc = tiny.encode_images(_images(4))
    same_action = [tiny.dynamics_example(enc.codes[0], enc.codes[i], "open the box") for i in (1, 2, 3)]
    ragged = [
        tiny.dynamics_example(enc.codes[0], enc.codes[1], "left"),
        tiny.dynamics_example(enc.codes[0], enc.codes[2], "move the small blue circle further away please"),
    ]
    unrelated = [tiny.dynamics_example(enc.codes[i], enc.codes[3], "left") for i in (0, 1)]
    for examples in (same_action, ragged, unrelated, same_action[:1]):
        plain = tiny.score(examples, batch_size=len(examples))
        shared = tiny.score_shared_prefix(examples)
        assert shared.total.tolist() == pytest.approx(plain.total.tolist(), abs=f32_atol(plain.total.abs().max()))
        assert shared.count.tolist() == plain.count.tolist()


def test_labels_only_on_completion(tiny):
    enc = tiny.encode_images(_images(2))
    ex = tiny.world_example(enc.codes[0], "move", enc.codes[1])
    labelled = [i for i, lab in enumerate(ex.labels) if lab != -100]
    assert labelled == list(range(ex.completion_start, len(ex.input_ids)))
    assert len(labelled) == tiny.image_seq_len
    dyn = tiny.dynamics_example(enc.codes[0], enc.codes[1], "move")
    assert dyn.labels[-1] == tiny.eos_id
    assert all(lab == -100 for lab in dyn.labels[: dyn.completion_start])


def test_world_layout_can_put_the_action_first(tiny):
    """``world_before`` moves the action before the source image: the images become adjacent."""
    from worldboot.models.backbone import PromptTemplates

    enc = tiny.encode_images(_images(2))
    default = tiny.world_example(enc.codes[0], "move left", enc.codes[1])
    text = tiny.tokenizer(" Action: move left. Next observation:", add_special_tokens=False)["input_ids"]
    start = 1 + tiny.image_seq_len + 2  # <s> [boi] o_s [eoi]
    assert default.input_ids[1] == tiny.boi_id and default.input_ids[start : start + len(text)] == text

    tiny.templates = PromptTemplates(world_before=" Action: {action}.", world="")
    first = tiny.world_example(enc.codes[0], "move left", enc.codes[1])
    before = tiny.tokenizer(" Action: move left.", add_special_tokens=False)["input_ids"]
    assert first.input_ids[1 : 1 + len(before)] == before
    boi = 1 + len(before)
    assert first.input_ids[boi] == tiny.boi_id
    # [boi] o_s [eoi] [boi] | o_t: the target starts L + 2 tokens after the source.
    assert first.completion_start == boi + tiny.image_seq_len + 3
    assert first.input_ids[first.completion_start - 2 : first.completion_start] == [tiny.eoi_id, tiny.boi_id]
    assert first.input_ids[first.completion_start :] == default.input_ids[default.completion_start :]


def test_generation_exact_length_and_decodes(tiny):
    enc = tiny.encode_images(_images(2))
    prompts = [tiny.world_example(enc.codes[0], "move left"), tiny.world_example(enc.codes[1], "open the box now")]
    gen = torch.Generator().manual_seed(0)
    codes = tiny.generate_images(prompts, num_samples=3, sampling=SamplingConfig(top_k=50, top_p=0.9), generator=gen)
    assert codes.shape == (2, 3, 64)
    assert int(codes.min()) >= 0 and int(codes.max()) < 512
    assert len(tiny.decode_codes(codes[0])) == 3
    # Samples differ at temperature 1 (a random 1M-parameter model is far from deterministic).
    assert not torch.equal(codes[0, 0], codes[0, 1])


def test_cached_greedy_equals_full_forward_greedy(tiny):
    """One prefill + KV cache + left padding must give what recomputing the whole sequence gives."""
    enc = tiny.encode_images(_images(2))
    short = tiny.world_example(enc.codes[0], "go")
    long = tiny.world_example(enc.codes[1], "move the large green square to the left of the cup")
    greedy = SamplingConfig(temperature=0.0)
    got = tiny.generate_images([short, long], num_samples=2, sampling=greedy)
    for row, prompt in enumerate([short, long]):
        ids = list(prompt.input_ids)
        expected = []
        with torch.no_grad():
            for _ in range(tiny.image_seq_len):
                logits = tiny.core(input_ids=torch.tensor([ids])).logits[0, -1]
                code = int(logits[tiny.code_to_token].argmax())
                expected.append(code)
                ids.append(int(tiny.code_to_token[code]))
        assert got[row, 0].tolist() == expected
        assert torch.equal(got[row, 0], got[row, 1])


def test_seeded_generation_is_reproducible(tiny):
    enc = tiny.encode_images(_images(1))
    p = [tiny.world_example(enc.codes[0], "move")]
    a = tiny.generate_images(p, 2, generator=torch.Generator().manual_seed(7))
    b = tiny.generate_images(p, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_guidance_runs_and_changes_samples(tiny):
    enc = tiny.encode_images(_images(1))
    p = [tiny.world_example(enc.codes[0], "move the cube")]
    u = [tiny.world_uncond_example(enc.codes[0])]
    plain = tiny.generate_images(p, 1, SamplingConfig(temperature=0.0))
    guided = tiny.generate_images(p, 1, SamplingConfig(temperature=0.0, guidance_scale=3.0), uncond_prompts=u)
    assert guided.shape == plain.shape
    assert not torch.equal(plain, guided)


def test_generate_text_stops_and_excludes_images(tiny):
    enc = tiny.encode_images(_images(2))
    prompt = tiny.dynamics_example(enc.codes[0], enc.codes[1])
    texts = tiny.generate_text([prompt, prompt], max_new_tokens=6)
    assert len(texts) == 2 and texts[0] == texts[1]
    assert "IMGIMG" not in texts[0]


def test_save_load_round_trip_identical_logits(tiny, tmp_path):
    enc = tiny.encode_images(_images(2))
    ex = tiny.world_example(enc.codes[0], "move", enc.codes[1])
    tiny.save(tmp_path / "copy")
    again = load_chameleon(tmp_path / "copy")
    ids = torch.tensor([ex.input_ids])
    with torch.no_grad():
        assert torch.equal(tiny.core(input_ids=ids).logits, again.core(input_ids=ids).logits)
    assert [np.asarray(i).tobytes() for i in tiny.decode_codes(enc.codes)] == [
        np.asarray(i).tobytes() for i in again.decode_codes(enc.codes)
    ]
    assert tiny.tokenizer_fingerprint() == again.tokenizer_fingerprint()


@pytest.mark.parametrize(("name", "data", "message"), [
    ("model.safetensors", b"garbage", "model.safetensors is not a readable safetensors file"),
    ("vq_decoder.safetensors", b"garbage", "vq_decoder.safetensors: not a readable safetensors file"),
    ("worldboot.json", b"{not json", "worldboot.json:1: not valid JSON"),
    ("config.json", b"[1,2", r"config\.json:1: not valid JSON"),
])
def test_damaged_model_files_are_one_line_naming_the_file(tiny_dir, tmp_path, name, data, message):
    import shutil

    from worldboot.errors import ModelError

    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    (model / name).write_bytes(data)
    with pytest.raises(ModelError, match=message) as err:
        load_chameleon(model)
    assert "\n" not in str(err.value)
