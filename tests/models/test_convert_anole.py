"""`worldboot convert anole`: a tiny checkpoint in Anole's release layout (Meta's key names,
interleaved rotary pairs, one QK-norm vector shared by the heads) converts to a model whose
logits equal those of the same weights built directly in transformers' layout; the rotary
convention is checked against attention computed the Meta way."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from anole_release import HEADS, write_release
from helpers import f32_atol
from worldboot.cli import main
from worldboot.errors import ModelError
from worldboot.models import load_backbone
from worldboot.models.tiny import build_tiny_chameleon


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A tiny model (transformers' layout, QK norms random but equal across heads, as Meta's are
    shared) and the same weights written as Anole's release folder."""
    return write_release(tmp_path_factory.mktemp("anole-release"))


def test_converted_logits_equal_the_direct_construction(release, tmp_path):
    bb, root, taming = release
    assert main(["convert", "anole", str(root), "--out", str(tmp_path / "anole")]) == 0
    converted = load_backbone(tmp_path / "anole")
    ids = torch.randint(0, bb.core.config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = bb.core(input_ids=ids).logits
        got = converted.core(input_ids=ids).logits
    # the same logits through permuted q/k rows and another rotary layout (helpers.f32_atol)
    torch.testing.assert_close(got, want, atol=f32_atol(want.abs().max()), rtol=0)
    assert converted.tokenizer.convert_tokens_to_ids("<image>") == bb.tokenizer.convert_tokens_to_ids("<image>")
    dec = converted.vqgan.decoder.state_dict()
    assert all(torch.equal(dec[k[len("decoder."):]], v) for k, v in taming.items() if k.startswith("decoder."))
    assert (tmp_path / "anole" / "tokenizer" / "vqgan.ckpt").is_file()  # where the loader looks


def test_the_rotary_convention_is_metas(release, tmp_path):
    """Layer 0's attention scores computed as Meta's model does (interleaved pairs rotated, one
    LayerNorm per head) on the release weights equal transformers' on the converted ones."""
    _, root, _ = release
    meta = torch.load(root / "models" / "7b" / "consolidated.pth", weights_only=True)
    out = tmp_path / "anole"
    assert main(["convert", "anole", str(root), "--out", str(out)]) == 0
    attn = load_backbone(out).core.model.layers[0].self_attn
    dim = meta["tok_embeddings.weight"].shape[1]
    hd, T = dim // HEADS, 7
    x = torch.randn(T, dim, generator=torch.Generator().manual_seed(2))

    def meta_side(w, norm):
        h = (x @ w.t()).view(T, HEADS, hd)
        h = torch.nn.functional.layer_norm(h, (hd,), norm[0], norm[1], eps=1e-5)
        pairs = torch.view_as_complex(h.reshape(T, HEADS, hd // 2, 2).contiguous())
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(T).float(), freqs)
        return torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles)[:, None]).reshape(T, HEADS, hd)

    qn = (meta["layers.0.attention.q_normalization.weight"], meta["layers.0.attention.q_normalization.bias"])
    kn = (meta["layers.0.attention.k_normalization.weight"], meta["layers.0.attention.k_normalization.bias"])
    q_ref, k_ref = meta_side(meta["layers.0.attention.wq.weight"], qn), meta_side(meta["layers.0.attention.wk.weight"], kn)
    want = torch.einsum("thd,shd->hts", q_ref, k_ref)

    with torch.no_grad():
        q = attn.q_norm(attn.q_proj(x).view(T, HEADS, hd))
        k = attn.k_norm(attn.k_proj(x).view(T, HEADS, hd))
        half = hd // 2
        freqs = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
        angles = torch.outer(torch.arange(T).float(), freqs).repeat(1, 2)[:, None]

        def rotate(h):
            rotated = torch.cat([-h[..., half:], h[..., :half]], dim=-1)
            return h * angles.cos() + rotated * angles.sin()

        got = torch.einsum("thd,shd->hts", rotate(q), rotate(k))
    torch.testing.assert_close(got, want, atol=f32_atol(want.abs().max()), rtol=0)  # in another order
    assert not math.isclose(float(want.abs().sum()), 0.0)


def test_bad_release_folders_are_one_line(release, tmp_path, capsys):
    _, root, _ = release
    broken = tmp_path / "broken"
    shutil.copytree(root, broken)
    (broken / "tokenizer" / "vqgan.yaml").unlink()
    assert main(["convert", "anole", str(broken), "--out", str(tmp_path / "x")]) == 2
    assert "missing tokenizer/vqgan.yaml" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    # Into the release, or a folder inside it: refused before a byte is written (it recursed).
    intact = sorted(p.relative_to(root) for p in root.rglob("*"))
    for out in (root, root / "tokenizer" / "conv"):
        assert main(["convert", "anole", str(root), "--out", str(out)]) == 2
        assert "lies inside the input" in capsys.readouterr().err
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == intact
    # Files that do not fit each other: one line each.
    for name, change in (("params", lambda b: (b / "models/7b/params.json").write_text(
                              (b / "models/7b/params.json").read_text().replace(f'"n_heads": {HEADS}', '"n_heads": 3'))),
                         ("tok", lambda b: (b / "tokenizer/text_tokenizer.json").write_text('{"model":'))):
        bad = tmp_path / name
        shutil.copytree(root, bad)
        change(bad)
        assert main(["convert", "anole", str(bad), "--out", str(tmp_path / f"{name}-out")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and ("does not fit params.json" in err[0] or "not a tokenizers JSON file" in err[0]), err


def test_a_folder_from_anoles_modified_converter_is_refused(release, tmp_path, tiny_dir, capsys):
    """Its q_norm is [head_dim]: converting it, or loading it, says what to do in one line."""
    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(tiny_dir, old)
    sd = load_file(str(old / "model.safetensors"))
    for key in [k for k in sd if k.endswith(("q_norm.weight", "k_norm.weight", "q_norm.bias", "k_norm.bias"))]:
        sd[key] = sd[key][0].clone()
    save_file(sd, str(old / "model.safetensors"), metadata={"format": "pt"})
    for argv in (["convert", "anole", str(old), "--out", str(tmp_path / "y")], ["info", "--model", str(old)]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "worldboot convert anole" in err[0] and "q_norm of shape [head_dim]" in err[0], err
    with pytest.raises(ModelError, match="modified transformers"):
        load_backbone(old)


def test_every_tensor_is_used_or_refused_by_name(release, tmp_path, capsys):
    """A params.json listing fewer layers than the checkpoint holds converted, silently, into a
    smaller model; a tensor of the wrong shape was refused without its name. Both are one line
    now, naming the tensor (and both shapes)."""
    _, root, _ = release
    fewer = tmp_path / "fewer"
    shutil.copytree(root, fewer)
    params = fewer / "models/7b/params.json"
    data = json.loads(params.read_text())
    data["model"]["n_layers"] -= 1
    params.write_text(json.dumps(data))
    assert main(["convert", "anole", str(fewer), "--out", str(tmp_path / "fewer-out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    last = data["model"]["n_layers"]
    assert len(err) == 1 and f"consolidated.pth holds layers.{last}." in err[0], err
    assert f"params.json gives no place (n_layers {last})" in err[0]
    assert not (tmp_path / "fewer-out").exists()

    shape = tmp_path / "shape"
    shutil.copytree(root, shape)
    ckpt = shape / "models/7b/consolidated.pth"
    meta = torch.load(ckpt, weights_only=True)
    w = meta["layers.0.feed_forward.w2.weight"]
    meta["layers.0.feed_forward.w2.weight"] = w[:, :-1].clone()
    torch.save(meta, ckpt)
    assert main(["convert", "anole", str(shape), "--out", str(tmp_path / "shape-out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    want, got = list(w.shape), [w.shape[0], w.shape[1] - 1]
    assert len(err) == 1 and f"model.layers.0.mlp.down_proj.weight is {got} in the checkpoint" in err[0], err
    assert f"make it {want}" in err[0]


def _reference_vqgan(tok_dir):
    """The release's VQGAN loaded straight from vqgan.ckpt, in float32, with transformers' own
    ChameleonVQVAE and worldboot's decoder: what the converted model must equal."""
    from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

    from worldboot.models.vq import VQGAN, ChameleonVQDecoder, load_taming_vqgan

    config, vq_sd, dec_sd = load_taming_vqgan(tok_dir / "vqgan.ckpt", tok_dir / "vqgan.yaml")
    vq, dec = ChameleonVQVAE(config), ChameleonVQDecoder(config)
    vq.load_state_dict(vq_sd, strict=False)
    dec.load_state_dict(dec_sd, strict=True)
    return VQGAN(vq.float().eval(), dec.float().eval())


def test_a_bf16_release_converts_without_touching_the_tokenizer(release, tmp_path):
    """Anole ships its language model in bf16 and its VQGAN in fp32: the conversion keeps the
    tokenizer in fp32, so codes and decodes equal the VQGAN's own on RGB, grey, RGBA and noise
    images, and preprocessing is the reference's float64 x / 255 * 2 - 1."""
    import numpy as np
    from PIL import Image

    bb, root, _ = release
    bf16 = tmp_path / "bf16-release"
    shutil.copytree(root, bf16)
    ckpt = bf16 / "models/7b/consolidated.pth"
    torch.save({k: v.to(torch.bfloat16) for k, v in torch.load(ckpt, weights_only=True).items()}, ckpt)
    assert main(["convert", "anole", str(bf16), "--out", str(tmp_path / "out")]) == 0
    converted = load_backbone(tmp_path / "out", dtype="bfloat16")
    assert converted.core.model.embed_tokens.weight.dtype == torch.bfloat16
    assert {p.dtype for p in converted.core.model.vqmodel.parameters()} == {torch.float32}
    assert {p.dtype for p in converted.vqgan.decoder.parameters()} == {torch.float32}
    reference = _reference_vqgan(bf16 / "tokenizer")
    size = converted.image_size
    rng = np.random.default_rng(0)
    images = [
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB"),
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L"),
        Image.fromarray(rng.integers(0, 256, (size, size, 4), dtype=np.uint8), "RGBA"),
        Image.fromarray(np.full((size, size, 3), (30, 120, 220), dtype=np.uint8), "RGB"),
    ]
    from worldboot.images import to_rgb

    for img in images:
        pixels = converted.preprocess([img])
        want = torch.from_numpy((np.asarray(to_rgb(img), dtype=np.float64) / 255 * 2 - 1).astype(np.float32))
        assert torch.equal(pixels[0], want.permute(2, 0, 1))  # the reference's arithmetic, bit for bit
        with torch.no_grad():
            # The same pixel tensor (bit for bit the reference's formula, checked above): buffers
            # laid out or aligned otherwise can reach oneDNN's other kernels, whose float32 sums
            # differ in the last bits and flip near-ties on noise images.
            codes, _ = reference.encode(pixels)
            assert torch.equal(converted.encode_images([img]).codes, codes), img.mode
            ours = np.asarray(converted.decode_codes(codes)[0], dtype=np.int16)
            theirs = ((reference.decode(codes).float() + 1.0) * 127.5).round().clamp(0, 255)[0].permute(1, 2, 0)
        assert np.array_equal(ours, theirs.numpy().astype(np.int16)), img.mode
    # The language model's logits are the bf16 weights' (its tokenizer apart, nothing rounded twice).
    ids = torch.randint(0, bb.core.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    direct = build_tiny_chameleon()
    direct.core.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in bb.core.state_dict().items()})
    with torch.no_grad():
        want = direct.core(input_ids=ids).logits
        got = load_backbone(tmp_path / "out").core(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=f32_atol(want.abs().max()), rtol=0)
