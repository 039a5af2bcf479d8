"""A tiny Anole-7B release folder for tests and scripts: a tiny Chameleon's weights written in
Meta's layout (``models/7b/consolidated.pth``, ``params.json``, ``tokenizer/`` with
``vqgan.ckpt`` and ``vqgan.yaml``), as ``worldboot convert anole`` reads Anole's release."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from models.test_vq import TAMING_PARAMS, _taming_state_dict
from worldboot.models.tiny import build_tiny_chameleon

HEADS = 4


def _interleave(w: torch.Tensor, heads: int) -> torch.Tensor:
    """transformers' per-head halves back to Meta's interleaved pairs (the release layout)."""
    hd = w.shape[0] // heads
    return w.reshape(heads, 2, hd // 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def write_release(root: Path) -> tuple:  # (the tiny backbone, root, the VQGAN checkpoint's state dict)
    """A tiny model (transformers' layout, QK norms random but equal across heads, as Meta's are
    shared) and the same weights written as Anole's release folder."""
    bb = build_tiny_chameleon()
    torch.manual_seed(1)
    cfg = bb.core.config
    sd = bb.core.state_dict()
    for key in [k for k in sd if "_norm." in k and "self_attn" in k]:
        sd[key] = torch.randn(sd[key].shape[-1]).expand_as(sd[key]).clone()
    bb.core.load_state_dict(sd)
    meta = {"tok_embeddings.weight": sd["model.embed_tokens.weight"], "norm.weight": sd["model.norm.weight"],
            "output.weight": sd["lm_head.weight"]}
    names = {"q_proj": "wq", "k_proj": "wk", "v_proj": "wv", "o_proj": "wo"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        for ours, theirs in names.items():
            w = sd[p + f"self_attn.{ours}.weight"]
            meta[f"layers.{i}.attention.{theirs}.weight"] = _interleave(w, HEADS) if ours in ("q_proj", "k_proj") else w
        for ours, theirs in (("q_norm", "q_normalization"), ("k_norm", "k_normalization")):
            for part in ("weight", "bias"):
                row = sd[p + f"self_attn.{ours}.{part}"][0]
                meta[f"layers.{i}.attention.{theirs}.{part}"] = _interleave(row[:, None], 1)[:, 0].clone()
        for ours, theirs in (("gate_proj", "w1"), ("down_proj", "w2"), ("up_proj", "w3")):
            meta[f"layers.{i}.feed_forward.{theirs}.weight"] = sd[p + f"mlp.{ours}.weight"]
        meta[f"layers.{i}.attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        meta[f"layers.{i}.ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    (root / "models" / "7b").mkdir(parents=True)
    torch.save(meta, root / "models" / "7b" / "consolidated.pth")
    params = {"dim": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": HEADS, "norm_eps": cfg.rms_norm_eps,
              "rope_theta": cfg.rope_parameters["rope_theta"],
              "swin_norm": False, "qk_normalization": True}
    (root / "models" / "7b" / "params.json").write_text(json.dumps({"model": params}))
    (root / "models" / "7b" / "consolidate_params.json").write_text(json.dumps({"model_parallel_size": 1}))
    tok = root / "tokenizer"
    tok.mkdir()
    data = json.loads(bb.tokenizer.backend_tokenizer.to_str())
    data["model"]["vocab"]["<reserved08707>"] = data["model"]["vocab"].pop("<image>")
    for t in data["added_tokens"]:
        if t["content"] == "<image>":
            t["content"] = "<reserved08707>"
    (tok / "text_tokenizer.json").write_text(json.dumps(data))
    taming = _taming_state_dict(bb)
    torch.save({"state_dict": taming}, tok / "vqgan.ckpt")
    (tok / "vqgan.yaml").write_text(yaml.safe_dump({"model": {"params": TAMING_PARAMS}}))
    return bb, root, taming
