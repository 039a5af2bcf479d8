"""The VQGAN decoder and the converter from Anole's taming-style checkpoint."""

from __future__ import annotations

import pytest
import torch
import yaml

from worldboot.errors import ModelError
from worldboot.models.vq import (
    ChameleonVQDecoder,
    load_taming_vqgan,
    split_taming_state_dict,
    vq_config_from_taming_yaml,
)

# The model.params of a taming vqgan.yaml, shaped like Anole's (ch_mult etc. shrunk).
TAMING_PARAMS = {
    "embed_dim": 64,
    "n_embed": 512,
    "ddconfig": {
        "double_z": False,
        "z_channels": 64,
        "resolution": 64,
        "in_channels": 3,
        "out_ch": 3,
        "ch": 32,
        "ch_mult": [1, 1, 2, 2],
        "num_res_blocks": 1,
        "attn_resolutions": [],
        "dropout": 0.0,
    },
}


def _taming_state_dict(tiny) -> dict[str, torch.Tensor]:
    """A checkpoint laid out as taming's VQModel saves it, with a training-only loss key."""
    sd = {k: v.clone() for k, v in tiny.vqgan.vq.state_dict().items()}
    sd.update({f"decoder.{k}": torch.randn_like(v) for k, v in tiny.vqgan.decoder.state_dict().items()})
    sd["loss.discriminator.main.0.weight"] = torch.zeros(1)
    return sd


def test_decoder_has_taming_key_names(tiny):
    keys = set(tiny.vqgan.decoder.state_dict())
    for name in [
        "conv_in.weight",
        "mid.block_1.norm1.weight",
        "mid.attn_1.q.weight",
        "mid.attn_1.proj_out.bias",
        "mid.block_2.conv2.weight",
        "up.0.block.0.conv1.weight",
        "up.1.block.0.nin_shortcut.weight",
        "up.3.upsample.conv.weight",
        "norm_out.weight",
        "conv_out.weight",
    ]:
        assert name in keys, name
    assert not any(k.startswith("up.0.upsample") for k in keys)  # the last level does not upsample


def test_decoder_output_resolution(tiny):
    z = torch.randn(2, 64, 8, 8)
    assert tiny.vqgan.decoder(z).shape == (2, 3, 64, 64)


def test_split_and_strict_load(tiny):
    vq_sd, dec_sd = split_taming_state_dict(_taming_state_dict(tiny))
    fresh = ChameleonVQDecoder(tiny.core.config.vq_config)
    fresh.load_state_dict(dec_sd, strict=True)
    tiny.vqgan.vq.load_state_dict(vq_sd, strict=True)
    assert not any(k.startswith("loss.") for k in list(vq_sd) + list(dec_sd))


def test_split_refuses_unknown_keys(tiny):
    sd = _taming_state_dict(tiny)
    sd["something.else"] = torch.zeros(1)
    with pytest.raises(ModelError, match="something.else"):
        split_taming_state_dict(sd)


def test_yaml_config_matches_model(tiny):
    cfg = vq_config_from_taming_yaml(TAMING_PARAMS)
    ours = tiny.core.config.vq_config
    for key in ("embed_dim", "num_embeddings", "latent_channels", "base_channels", "resolution"):
        assert getattr(cfg, key) == getattr(ours, key)
    assert list(cfg.channel_multiplier) == list(ours.channel_multiplier)


def test_load_checkpoint_file_weights_only(tiny, tmp_path, tiny_dir):
    sd = _taming_state_dict(tiny)
    vq_dir = tmp_path / "vq"
    vq_dir.mkdir()
    torch.save({"state_dict": sd}, vq_dir / "vqgan.ckpt")
    (vq_dir / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    cfg, vq_sd, dec_sd = load_taming_vqgan(vq_dir / "vqgan.ckpt", vq_dir / "vqgan.yaml")
    assert cfg.num_embeddings == 512 and len(dec_sd) == len(tiny.vqgan.decoder.state_dict())

    # An Anole-style directory without our decoder file loads its decoder from the checkpoint.
    import shutil

    from worldboot.models.chameleon import DECODER_FILE, load_chameleon

    model_dir = tmp_path / "hf"
    shutil.copytree(tiny_dir, model_dir)
    (model_dir / DECODER_FILE).unlink()
    with pytest.raises(ModelError, match="tokenizer/vqgan.ckpt"):
        load_chameleon(model_dir)
    bb = load_chameleon(model_dir, vqgan_dir=vq_dir)
    got = bb.vqgan.decoder.state_dict()
    assert all(torch.equal(got[k], v) for k, v in dec_sd.items())
    # Anole's layout: the tokenizer/ folder beside the model folder is found without a flag.
    shutil.copytree(vq_dir, model_dir.parent / "tokenizer", dirs_exist_ok=True)
    found = load_chameleon(model_dir).vqgan.decoder.state_dict()
    assert all(torch.equal(found[k], v) for k, v in dec_sd.items())


def test_unsafe_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    path = tmp_path / "vqgan.ckpt"
    torch.save({"state_dict": {}, "obj": Evil()}, path)
    (tmp_path / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    with pytest.raises(ModelError, match="weights_only"):
        load_taming_vqgan(path, tmp_path / "vqgan.yaml")


@pytest.mark.parametrize(("text", "message"), [
    ("model:\n  params:\n    embed_dim: 64\n", "not a taming VQGAN config .*ddconfig"),
    ("just text", "not a taming VQGAN config"),
    ("model: [unclosed\n", "not a readable YAML file"),
])
def test_a_vqgan_yaml_that_is_not_one_is_one_line(tmp_path, text, message):
    (tmp_path / "vqgan.yaml").write_text(text)
    with pytest.raises(ModelError, match=message) as err:
        load_taming_vqgan(tmp_path / "vqgan.ckpt", tmp_path / "vqgan.yaml")
    assert "\n" not in str(err.value) and "vqgan.yaml" in str(err.value)


def test_the_tokenizer_folder_must_hold_the_models_own_encoder(tiny, tmp_path, tiny_dir):
    """Equal keys and shapes are not enough: the encoder's values are compared too."""
    import shutil

    from worldboot.models.chameleon import DECODER_FILE, load_chameleon

    model_dir = tmp_path / "hf"
    shutil.copytree(tiny_dir, model_dir)
    (model_dir / DECODER_FILE).unlink()
    sd = _taming_state_dict(tiny)
    sd["encoder.conv_in.weight"] = sd["encoder.conv_in.weight"] + 1e-3
    (model_dir / "tokenizer").mkdir()
    torch.save({"state_dict": sd}, model_dir / "tokenizer" / "vqgan.ckpt")
    (model_dir / "tokenizer" / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    with pytest.raises(ModelError, match=r"its VQ encoder differs from the model's \(encoder.conv_in.weight\)"):
        load_chameleon(model_dir)


def test_a_safetensors_vqgan_is_accepted(tiny, tmp_path, tiny_dir):
    import shutil

    from safetensors.torch import save_file

    from worldboot.models.chameleon import DECODER_FILE, load_chameleon

    model_dir = tmp_path / "hf"
    shutil.copytree(tiny_dir, model_dir)
    (model_dir / DECODER_FILE).unlink()
    sd = _taming_state_dict(tiny)
    (model_dir / "tokenizer").mkdir()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(model_dir / "tokenizer" / "vqgan.safetensors"))
    (model_dir / "tokenizer" / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    got = load_chameleon(model_dir).vqgan.decoder.state_dict()
    assert all(torch.equal(got[k[len("decoder."):]], v) for k, v in sd.items() if k.startswith("decoder."))


def test_transparent_pixels_are_laid_over_white_as_the_reference_does(tiny, tmp_path):
    import numpy as np
    from PIL import Image

    from worldboot.images import open_image, to_rgb

    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[:8, :, 3] = 0  # fully transparent rows (their colour must not show)
    rgba[8:16, :, 3] = 255
    img = Image.fromarray(rgba, "RGBA")
    a = rgba[:, :, 3:] / 255.0
    want = ((1 - a) * 255 + a * rgba[:, :, :3]).astype(np.uint8)  # Chameleon's reference formula
    assert np.array_equal(np.asarray(to_rgb(img)), want)
    assert (np.asarray(to_rgb(img))[:8] == 255).all()
    img.save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(open_image(tmp_path / "a.png")), want)
    torch.testing.assert_close(tiny.preprocess([img]), tiny.preprocess([Image.fromarray(want, "RGB")]), atol=0, rtol=0)
    opaque = Image.fromarray(rgba[8:16], "RGBA")
    assert np.array_equal(np.asarray(to_rgb(opaque)), rgba[8:16, :, :3])
