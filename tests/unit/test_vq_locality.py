"""The VQ's locality loss and the world's untouched-token masks."""

from __future__ import annotations

import pytest
import torch

from worldboot.data import world
from worldboot.data.world import Action, Obj, Ref, Scene
from worldboot.foundation import world_base as wb
from worldboot.models.tiny import TinyChameleonSpec, build_tiny_chameleon, tiny_config
from worldboot.models.vq_train import VQTrainSettings, build_vq, locality_loss, reset_conv_init, train_vq


def _scene() -> Scene:
    return Scene((Obj("circle", "red", "small", 0, 0), Obj("square", "blue", "large", 2, 3)))


def test_untouched_tokens_marks_the_changed_cells_and_a_margin():
    before = _scene()
    after = world.apply(before, Action("move", "right", Ref("red", "circle"), steps=1))
    keep = wb.untouched_tokens(before, after, tokens=8, margin=0)
    # Cells (0, 0) and (0, 1) changed: 2x2 tokens each, the rest is kept.
    assert (~keep).sum() == 8 and not keep[0:2, 0:4].any() and keep[2:, :].all()
    wide = wb.untouched_tokens(before, after, tokens=8, margin=1)
    assert not wide[0:3, 0:5].any() and wide[3:, :].all() and wide[:, 5:].all()
    assert wb.untouched_tokens(before, before, tokens=8).all()


def test_locality_pairs_are_real_actions():
    images, keep = wb.locality_pairs(seed=0, step=3, n=4, size=64, tokens=8)
    assert len(images) == 8 and keep.shape == (4, 8, 8) and keep.dtype == torch.bool
    assert all(images[2 * i].tobytes() != images[2 * i + 1].tobytes() for i in range(4))
    assert (~keep).flatten(1).any(dim=1).all()  # every action touches some tokens
    again, _ = wb.locality_pairs(seed=0, step=3, n=4, size=64, tokens=8)
    assert [im.tobytes() for im in again] == [im.tobytes() for im in images]


def _vq(attention: bool = True):
    spec = TinyChameleonSpec(codebook=64, vq_embed_dim=16, vq_attention=attention)
    bb = build_tiny_chameleon(spec)
    return bb, build_vq(tiny_config(spec, bb.tokenizer).vq_config)


def test_attention_is_a_spec_option():
    bb, vq = _vq(attention=False)
    assert isinstance(vq.vq.encoder.mid.attn_1, torch.nn.Identity)
    assert isinstance(vq.decoder.mid.attn_1, torch.nn.Identity)
    assert bb.model.config.vq_config.attn_type == "none"
    _, vanilla = _vq(attention=True)
    assert not isinstance(vanilla.vq.encoder.mid.attn_1, torch.nn.Identity)


def test_locality_loss_is_zero_for_unchanged_positions_only():
    bb, vq = _vq()
    torch.manual_seed(0)
    reset_conv_init(vq)
    images, keep = wb.locality_pairs(seed=1, step=0, n=3, size=64, tokens=8)
    pixels = bb.preprocess(images)
    same = pixels.clone()
    same[1::2] = same[0::2]
    with torch.no_grad():
        assert float(locality_loss(vq, same, keep)) == pytest.approx(0.0, abs=1e-9)
        assert float(locality_loss(vq, pixels, torch.zeros_like(keep))) == 0.0
        assert float(locality_loss(vq, pixels, keep)) > 0.0


def test_the_locality_loss_trains_down():
    """Its gradient reaches the encoder: a few steps on it alone cut it below half on held-out pairs
    (with the reconstruction loss beside it, collapsing the features is not an option)."""
    bb, vq = _vq(attention=False)
    torch.manual_seed(0)
    reset_conv_init(vq)
    held, held_keep = wb.locality_pairs(seed=2, step=0, n=6, size=64, tokens=8)
    held_px = bb.preprocess(held)
    with torch.no_grad():
        before = float(locality_loss(vq, held_px, held_keep))
    opt = torch.optim.Adam(vq.parameters(), lr=2e-3)
    for step in range(25):
        images, keep = wb.locality_pairs(seed=3, step=step, n=4, size=64, tokens=8)
        loss = locality_loss(vq, bb.preprocess(images), keep)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(locality_loss(vq, held_px, held_keep))
    assert after < 0.5 * before, (before, after)


def test_train_vq_needs_pairs_for_the_locality_loss():
    bb, vq = _vq()
    settings = VQTrainSettings(steps=2, batch_size=2, locality_weight=1.0)

    def sample(step: int, n: int) -> torch.Tensor:
        return bb.preprocess([wb.render(s, 64) for s in wb.eval_scenes(step, n)])

    with pytest.raises(ValueError, match="sample_pairs"):
        train_vq(vq, sample, settings, progress=False)
    calls = []

    def pairs(step: int, n: int):
        calls.append((step, n))
        images, keep = wb.locality_pairs(0, step, n, 64, 8)
        return bb.preprocess(images), keep

    metrics = train_vq(vq, sample, VQTrainSettings(steps=2, batch_size=2, locality_weight=1.0, pair_batch_size=3),
                       progress=False, sample_pairs=pairs)
    assert calls == [(0, 3), (1, 3)] and metrics["locality"] > 0
