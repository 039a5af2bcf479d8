"""The tokenizer with given codes: the world's cell codes, its batches and its trainer."""

from __future__ import annotations

import numpy as np
import torch

from worldboot import base as wb
from worldboot import world
from worldboot.base.vq_train import VQTrainSettings, code_logits, train_vq
from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon
from worldboot.world.actions import Action
from worldboot.world.patches import CELL_KINDS, cell_kind, patch_code_count, patch_codes
from worldboot.world.render import render
from worldboot.world.scene import Obj, Ref, Scene


def _scene() -> Scene:
    return Scene((Obj("circle", "red", "small", 0, 0), Obj("box", "blue", "large", 2, 3, "open")))


def test_cell_kinds_name_every_drawing_once():
    assert CELL_KINDS[0] is None and len(set(CELL_KINDS)) == len(CELL_KINDS)
    # 3 stateless shapes + 2 shapes with 2 states, x 6 colours x 2 sizes, + the bare table.
    assert len(CELL_KINDS) == 1 + 7 * len(world.COLOURS) * len(world.SIZES)
    assert cell_kind(None) == 0 and CELL_KINDS[cell_kind(_scene().objects[1])] == ("box", "open", "blue", "large")


def test_patch_codes_name_the_drawing_and_its_quarter():
    scene = _scene()
    one = patch_codes(scene, 1)
    assert one.shape == (4, 4) and one.dtype == np.int64 and (one != 0).sum() == 2
    assert CELL_KINDS[one[2, 3]] == ("box", "open", "blue", "large")
    two = patch_codes(scene, 2)
    assert two.shape == (8, 8) and (two != 0).sum() == 8
    quarters = two[4:6, 6:8].flatten().tolist()
    k = cell_kind(scene.objects[1])
    assert quarters == [1 + (k - 1) * 4 + q for q in range(4)]
    assert len(set(two[0:2, 0:2].flatten().tolist()) | set(quarters)) == 8  # all different codes
    assert int(two.max()) < patch_code_count(2) == 1 + 84 * 4
    # The same object elsewhere has the same codes: what is drawn, not where.
    moved = world.apply(scene, Action("move", "left", Ref("blue", "box"), steps=1))
    assert patch_codes(moved, 2)[4:6, 4:6].flatten().tolist() == quarters


def test_untouched_tokens_marks_the_changed_cells():
    before = _scene()
    after = world.apply(before, Action("move", "right", Ref("red", "circle"), steps=1))
    keep = wb.untouched_tokens(before, after, tokens=4)
    assert (~keep).sum() == 2 and not keep[0, 0] and not keep[0, 1]
    wide = wb.untouched_tokens(before, after, tokens=8, margin=1)  # 2x2 tokens per cell
    assert not wide[0:3, 0:5].any() and wide[3:, :].all() and wide[:, 5:].all()
    assert wb.untouched_tokens(before, before, tokens=4).all()


def _backbone():
    spec = TinyChameleonSpec(codebook=patch_code_count(2), vq_embed_dim=16, vq_channel_multiplier=[1, 1, 2, 2])
    return build_tiny_chameleon(spec)


def test_vq_batch_is_deterministic_and_coded_by_cell():
    bb = _backbone()
    recipe = wb.VQRecipe()
    batch = wb.vq_batch(bb, recipe, seed=0, step=3, n=6)
    assert batch.inputs.shape == batch.targets.shape == (6, 3, 64, 64)
    assert batch.codes.shape == (6, 8, 8) and int(batch.codes.max()) < patch_code_count(2)
    again = wb.vq_batch(bb, recipe, seed=0, step=3, n=6)
    assert torch.equal(batch.inputs, again.inputs) and torch.equal(batch.codes, again.codes)
    other = wb.vq_batch(bb, recipe, seed=0, step=4, n=6)
    assert not torch.equal(batch.codes, other.codes)
    # A crowded share fills most cells: every cell kind reaches every cell in training.
    many = wb.vq_batch(bb, wb.VQRecipe(crowded=1.0), seed=0, step=0, n=8)
    assert (many.codes != 0).flatten(1).sum(1).min() >= 5 * 4


def test_code_logits_pick_what_encode_returns():
    bb = _backbone()
    pixels = bb.preprocess([render(_scene(), 64)])
    codes, _ = bb.vqgan.encode(pixels)
    assert torch.equal(code_logits(bb.vqgan, pixels).argmax(1), codes.flatten())


def test_training_teaches_the_encoder_the_given_codes():
    torch.set_num_threads(1)
    bb = _backbone()
    recipe = wb.VQRecipe()
    held = wb.vq_batch(bb, recipe, seed=9, step=0, n=16)

    def accuracy() -> float:
        with torch.no_grad():
            return float((code_logits(bb.vqgan, held.inputs).argmax(1) == held.codes.flatten()).float().mean())

    before = accuracy()
    metrics = train_vq(
        bb.vqgan, lambda step, n: wb.vq_batch(bb, recipe, 0, step, n), VQTrainSettings(steps=40, batch_size=4),
        progress=False,
    )
    after = accuracy()
    assert after > before + 0.4, (before, after)
    assert metrics["codes_used"] > 100 and 0.0 < metrics["decoder_mse"] < 1.0
    assert not any(p.requires_grad for p in bb.vqgan.parameters())  # frozen after training
