"""The world base's image codes: what each shows, and embeddings that start from its words."""

from __future__ import annotations

import random

import pytest
import torch

from helpers import own_colour_share
from worldboot import world
from worldboot.base import PROMPTS, text_corpus
from worldboot.base.pretrain import link_codes_to_words
from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon
from worldboot.world.patches import code_meaning, patch_code_count, patch_codes


def test_code_meaning_inverts_patch_codes():
    rng = random.Random(3)
    for _ in range(50):
        scene = world.sample_scene(rng, rng.randint(1, world.MAX_OBJECTS))
        codes = patch_codes(scene, 2)
        cells = {(o.row, o.col): o for o in scene.objects}
        for r in range(codes.shape[0]):
            for c in range(codes.shape[1]):
                kind, part = code_meaning(int(codes[r, c]), 2)
                obj = cells.get((r // 2, c // 2))
                if obj is None:
                    assert kind is None and part == 0
                else:
                    assert kind == (obj.shape, obj.state, obj.colour, obj.size)
                    assert part == (r % 2) * 2 + c % 2
    for bad in (-1, patch_code_count(2)):
        with pytest.raises(ValueError, match="not one of"):
            code_meaning(bad, 2)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.detach(), b.detach(), dim=0))


def test_codes_start_nearest_their_own_words():
    bb = build_tiny_chameleon(
        TinyChameleonSpec(codebook=patch_code_count(2), vq_channel_multiplier=[1, 1, 2, 2]),
        corpus=text_corpus(0), templates=PROMPTS,
    )
    tables = [bb.model.get_input_embeddings().weight, bb.model.get_output_embeddings().weight]
    before = [t.detach().clone() for t in tables]
    link_codes_to_words(bb, seed=0)

    def word(w: str) -> int:
        ids = bb.tokenizer(" " + w, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, w
        return ids[0]

    table_token = int(bb.code_to_token[0])
    for t, old in zip(tables, before, strict=True):
        assert torch.equal(t[table_token], old[table_token])  # the bare table keeps its start
        text_rows = [i for i in range(t.shape[0]) if i not in set(bb.code_to_token.tolist())]
        assert torch.equal(t[text_rows], old[text_rows])  # words are not moved
        own_shape = []
        for code in range(1, patch_code_count(2)):
            (shape, _state, _colour, _size), _part = code_meaning(code, 2)
            own_shape.append(_cos(t[int(bb.code_to_token[code])], t[word(shape)]))
        # Every code leans to its shape word.
        assert min(own_shape) > 0.2, min(own_shape)
    # Random word vectors are nearly, not exactly, orthogonal: the own colour is the nearest
    # colour word for almost every code.
    assert own_colour_share(bb) >= 0.95
