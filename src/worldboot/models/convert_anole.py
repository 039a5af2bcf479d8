"""``worldboot convert anole``: Anole-7B's release folder (Meta's layout) to a worldboot model.

The release holds ``models/7b/consolidated.pth`` with ``params.json`` (and
``consolidate_params.json``), and ``tokenizer/`` with ``text_tokenizer.json``, ``vqgan.ckpt``
and ``vqgan.yaml``. transformers ships no converter in its wheel, and Anole's own (a modified
copy of an older transformers) writes ``q_norm``/``k_norm`` of shape ``[head_dim]`` with
unpermuted rotary halves, which transformers 5 refuses; so the conversion is written here,
through transformers' own ``ChameleonConfig`` and model class.

What changes between the layouts:

* **Rotary halves.** Meta's attention rotates interleaved pairs ``(2i, 2i+1)`` of each head;
  transformers rotates the two halves ``(i, i + d/2)``. Each head's rows of ``wq`` and ``wk``
  are reordered so that the halves hold the pairs' first and second members.
* **Per-head QK norm.** Meta normalises each head with one ``[head_dim]`` weight and bias;
  transformers holds one row per head (``[heads, head_dim]``), in the reordered layout.
* **Names.** ``tok_embeddings`` -> ``model.embed_tokens``, ``attention.wq`` -> ``self_attn.q_proj``...
* **Tokenizer.** Chameleon's reserved token ``<reserved08707>`` becomes ``<image>``, the
  placeholder transformers' processor expects; the VQGAN's encoder goes into the model, its
  decoder into worldboot's ``vq_decoder.safetensors``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from worldboot.errors import ModelError, unless_loop
from worldboot.models.files import check_new_model_dir, field_value, read_json, tensor_mapping

#: Chameleon's reserved token that stands for an image placeholder in transformers.
IMAGE_PLACEHOLDER = ("<reserved08707>", "<image>")
#: Release files, relative to the release folder.
RELEASE_FILES = ("models/7b/params.json", "tokenizer/text_tokenizer.json", "tokenizer/vqgan.ckpt", "tokenizer/vqgan.yaml")


def half_split_rows(weight: torch.Tensor, heads: int) -> torch.Tensor:
    """Reorder each head's rows from interleaved pairs (Meta) to halves (transformers)."""
    out_dim = weight.shape[0]
    head_dim = out_dim // heads
    rest = weight.shape[1:]
    return weight.reshape(heads, head_dim // 2, 2, *rest).transpose(1, 2).reshape(out_dim, *rest)


def per_head_norm(vector: torch.Tensor, heads: int) -> torch.Tensor:
    """A Meta ``[head_dim]`` QK-norm weight or bias as transformers' ``[heads, head_dim]``."""
    return half_split_rows(vector[:, None], 1)[:, 0].expand(heads, -1).contiguous()


#: The keys of ``params.json`` the conversion reads: (key, kind of value as in
#: :data:`~worldboot.models.files.KINDS`, default; ``...`` for a required key).
PARAMS = (("dim", "count", ...), ("n_layers", "count", ...), ("n_heads", "count", ...), ("norm_eps", "positive", ...),
          ("n_kv_heads", "count", None), ("rope_theta", "positive", 10000.0), ("swin_norm", "flag", False))


def read_params(model_dir: Path) -> dict[str, Any]:
    """``params.json`` with ``consolidate_params.json`` over it (either may nest under ``model``).

    Raises:
        ModelError: Naming the file (and key) that is not a JSON mapping, lacks a key of
            :data:`PARAMS` or gives one a value of the wrong type or range.
    """
    params: dict[str, Any] = {}
    source: dict[str, Path] = {}  # which file gave each key
    for path in (model_dir / "params.json", model_dir / "consolidate_params.json"):
        if path == model_dir / "params.json" or path.is_file():
            data, part = read_json(path), "it"
            if isinstance(data, dict) and "model" in data:
                data, part = data["model"], "its model entry"
            if not isinstance(data, dict):
                raise ModelError(f"{path}: {part} holds {type(data).__name__}, where Meta's release has a mapping of sizes")
            params.update(data)
            source.update(dict.fromkeys(data, path))
    for key, kind, default in PARAMS:
        where = str(source.get(key, model_dir / "params.json"))
        params[key] = field_value(params, key, kind, where, default=default)
    return params


class _Reads(dict):
    """A checkpoint that remembers which of its tensors were read."""

    def __init__(self, tensors: dict[str, torch.Tensor]) -> None:
        super().__init__(tensors)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def convert_state_dict(meta: dict[str, torch.Tensor], params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Meta's language-model weights under transformers' names and layouts.

    Raises:
        ModelError: When the checkpoint holds a tensor that ``params`` gives no place (say the
            layers beyond ``n_layers``), naming the first one.
    """
    meta = _Reads(meta)
    out = _convert(meta, params)
    unused = sorted(set(meta) - meta.read)
    if unused:
        raise ModelError(
            f"consolidated.pth holds {unused[0]}"
            + (f" and {len(unused) - 1} more tensors" if len(unused) > 1 else "")
            + f" that params.json gives no place (n_layers {params['n_layers']}): the checkpoint does not fit params.json"
        )
    return out


def _convert(meta: dict[str, torch.Tensor], params: dict[str, Any]) -> dict[str, torch.Tensor]:
    heads = params["n_heads"]
    kv_heads = params.get("n_kv_heads") or heads
    out: dict[str, torch.Tensor] = {
        "model.embed_tokens.weight": meta["tok_embeddings.weight"],
        "model.norm.weight": meta["norm.weight"],
        "lm_head.weight": meta["output.weight"],
    }
    for i in range(params["n_layers"]):
        src, dst = f"layers.{i}.", f"model.layers.{i}."
        out[dst + "self_attn.q_proj.weight"] = half_split_rows(meta[src + "attention.wq.weight"], heads)
        out[dst + "self_attn.k_proj.weight"] = half_split_rows(meta[src + "attention.wk.weight"], kv_heads)
        out[dst + "self_attn.v_proj.weight"] = meta[src + "attention.wv.weight"]
        out[dst + "self_attn.o_proj.weight"] = meta[src + "attention.wo.weight"]
        for ours, theirs, n in (("q_norm", "q_normalization", heads), ("k_norm", "k_normalization", kv_heads)):
            for part in ("weight", "bias"):
                out[dst + f"self_attn.{ours}.{part}"] = per_head_norm(meta[src + f"attention.{theirs}.{part}"], n)
        out[dst + "mlp.gate_proj.weight"] = meta[src + "feed_forward.w1.weight"]
        out[dst + "mlp.down_proj.weight"] = meta[src + "feed_forward.w2.weight"]
        out[dst + "mlp.up_proj.weight"] = meta[src + "feed_forward.w3.weight"]
        out[dst + "input_layernorm.weight"] = meta[src + "attention_norm.weight"]
        out[dst + "post_attention_layernorm.weight"] = meta[src + "ffn_norm.weight"]
    return out


def _tokenizer(path: Path) -> Any:
    """transformers' fast tokenizer of Chameleon's ``text_tokenizer.json``, with ``<image>``."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from worldboot.models.chameleon import BOI_TOKEN, EOI_TOKEN

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = data["model"]["vocab"]
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{path}: not a tokenizers JSON file ({_first_line(err)})") from None
    added = data.get("added_tokens", [])
    if not isinstance(vocab, dict) or not isinstance(added, list) or not all(isinstance(t, dict) for t in added):
        raise ModelError(f"{path}: not a tokenizers JSON file of a BPE model (model.vocab must map tokens to ids, "
                         "added_tokens be a list of tokens)")
    old, new = IMAGE_PLACEHOLDER
    if old in vocab:
        vocab[new] = vocab.pop(old)
    for token in added:
        if token.get("content") == old:
            token["content"] = new
    try:
        backend = Tokenizer.from_str(json.dumps(data))
    except Exception as err:  # noqa: BLE001 - tokenizers raises a bare Exception for a file it cannot parse
        raise ModelError(f"{path}: not a tokenizers JSON file ({_first_line(err)})") from None
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        additional_special_tokens=[BOI_TOKEN, EOI_TOKEN],
    )


def _checkpoint(model_dir: Path) -> dict[str, torch.Tensor]:
    for name in ("consolidated.pth", "consolidated.00.pth"):
        path = model_dir / name
        if path.is_file():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:  # noqa: BLE001 - an unsafe or damaged pickle: refuse, never run it
                raise ModelError(f"{path}: cannot be read with weights_only=True ({type(err).__name__})") from None
            return tensor_mapping(blob, path)
    raise ModelError(f"{model_dir} has no consolidated.pth")


def convert_anole(src: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write a worldboot model directory from Anole's release folder.

    Args:
        src: The release folder (``models/7b/`` and ``tokenizer/``).
        out: The new model directory; Anole's ``tokenizer/`` folder is copied into it.

    Returns:
        ``out``.

    Raises:
        ModelError: A missing release file, a checkpoint that does not fit ``params.json``, or
            a folder converted by Anole's modified transformers (one line saying what to do).
    """
    from worldboot.models.chameleon import ChameleonBackbone, ChameleonWorldLM, refuse_old_conversion
    from worldboot.models.vq import build_taming_vqgan

    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise unless_loop(src, ModelError(f"Anole's release folder not found: {src}" if not src.exists()
                                          else f"{src} is a file: give Anole's release folder"))
    if (src / "config.json").is_file():
        refuse_old_conversion(src)
        raise ModelError(f"{src} is already in transformers' format: load it directly (it needs no conversion)")
    missing = [f for f in RELEASE_FILES if not (src / f).is_file()]
    if missing:
        raise ModelError(f"{src} is not Anole's release folder: missing {', '.join(missing)}")
    check_new_model_dir(out, src)
    model_dir = src / "models" / "7b"
    params = read_params(model_dir)
    vqgan = build_taming_vqgan(src / "tokenizer" / "vqgan.ckpt", src / "tokenizer" / "vqgan.yaml")
    tokenizer = _tokenizer(src / "tokenizer" / "text_tokenizer.json")
    meta = _checkpoint(model_dir)
    try:
        config, state = _config_and_state(params, meta, vqgan.vq.config, tokenizer)
    except KeyError as err:
        raise ModelError(f"{model_dir}: no {err} in params.json or consolidated.pth (not Anole's release?)") from None
    except (RuntimeError, ValueError, IndexError) as err:  # a reshape by params.json's sizes that the tensors refuse
        raise ModelError(f"{model_dir}: the checkpoint does not fit params.json ({_first_line(err)})") from None
    # The VQGAN keeps its checkpoint's float32 beside a bf16 language model (as the reference runs it).
    state.update({f"model.vqmodel.{k}": v.float() for k, v in vqgan.vq.state_dict().items()})
    from accelerate import init_empty_weights

    with init_empty_weights():  # weights come from the checkpoint; buffers (rotary) are made here
        model = ChameleonWorldLM(config)
    check_shapes(model.state_dict(), state, model_dir)
    try:
        result = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as err:  # a size that params.json (or vqgan.yaml) does not give
        raise ModelError(f"{src}: the checkpoints do not fit params.json and vqgan.yaml ({_first_line(err)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"{model_dir}: the checkpoint does not fit params.json (missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]})"
        )
    model.eval()
    ChameleonBackbone(model, tokenizer, vqgan.decoder.float(), int(config.vq_config.resolution)).save(out)
    shutil.copytree(src / "tokenizer", out / "tokenizer", dirs_exist_ok=True)
    return out


def check_shapes(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], where: Path) -> None:
    """Refuse, naming the first tensor and both shapes, weights that do not fit the model that
    ``params.json`` and ``vqgan.yaml`` describe (torch's own message names none in its first line)."""
    for key, tensor in state.items():
        want = expected.get(key)
        if want is not None and tuple(want.shape) != tuple(tensor.shape):
            raise ModelError(
                f"{where}: {key} is {list(tensor.shape)} in the checkpoint, but params.json and vqgan.yaml "
                f"make it {list(want.shape)}: the checkpoint does not fit them"
            )


def _config_and_state(
    params: dict[str, Any], meta: dict[str, torch.Tensor], vq_config: Any, tokenizer: Any
) -> tuple[Any, dict[str, torch.Tensor]]:
    from transformers import ChameleonConfig

    vocab = tokenizer.get_vocab()
    theta = float(params.get("rope_theta", 10000.0))
    config = ChameleonConfig(
        hidden_size=params["dim"],
        # The feed-forward width as the checkpoint has it (Meta derives it from dim, multiple_of
        # and ffn_dim_multiplier).
        intermediate_size=int(meta["layers.0.feed_forward.w1.weight"].shape[0]),
        num_attention_heads=params["n_heads"],
        num_hidden_layers=params["n_layers"],
        num_key_value_heads=params.get("n_kv_heads") or params["n_heads"],
        rms_norm_eps=params["norm_eps"],
        rope_parameters={"rope_type": "default", "rope_theta": theta},
        max_position_embeddings=16384 if theta > 10000.0 else 4096,  # Chameleon 1's context
        swin_norm=params.get("swin_norm", False),
        vocab_size=len(vocab),
        vocabulary_map=vocab,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        vq_config=vq_config.to_dict(),
    )
    return config, convert_state_dict(meta, params)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
