"""The ``causal-vq`` family: any transformers causal LM plus a VQGAN, the codes at an offset in
its vocabulary (Liquid-7B: Gemma-7B with 8192 codes at ids 256000-264191, Chameleon's VQGAN).

A model directory holds the language model as transformers saves it (``config.json``,
weights, tokenizer) and, beside it:

* ``worldboot.json``: ``{"family": "causal-vq", "image_size": 512, "image_token_offset":
  256000, "boi_token": "<boi>", "eoi_token": "<eoi>", "templates": {...}}``;
* the VQGAN, either worldboot's files (``vq_config.json``, ``vq_encoder.safetensors``,
  ``vq_decoder.safetensors``) or a taming ``tokenizer/`` folder (``vqgan.yaml`` with
  ``vqgan.ckpt`` or ``vqgan.safetensors``: Anole's, which Liquid uses).

The begin- and end-image markers are tokens of the text tokenizer; the model's vocabulary must
reach ``image_token_offset + K``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING
from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from worldboot.errors import ModelError, unless_loop
from worldboot.models.backbone import PromptTemplates
from worldboot.models.files import (
    check_new_model_dir,
    field_value,
    link_model_files,
    load_safetensors,
    load_tokenizer,
    read_json,
)
from worldboot.models.folder import build_config, load_state, load_weights, read_config, read_meta
from worldboot.models.lm_forward import unwrap, world_class
from worldboot.models.token_lm import TokenLMBackbone
from worldboot.models.vq import VQGAN, ChameleonVQDecoder, build_taming_vqgan, vqgan_checkpoint

FAMILY = "causal-vq"
META_FILE = "worldboot.json"
VQ_CONFIG_FILE = "vq_config.json"
ENCODER_FILE = "vq_encoder.safetensors"
DECODER_FILE = "vq_decoder.safetensors"


class CausalVQBackbone(TokenLMBackbone):
    """A causal LM with VQ codes at ``image_token_offset`` in its vocabulary.

    Args:
        model: The language model (a :func:`~worldboot.models.lm_forward.world_class` instance,
            or a peft/DDP wrapper of it).
        tokenizer: Its text tokenizer, holding ``boi_token`` and ``eoi_token``.
        vqgan: The image tokenizer.
        image_token_offset: Vocabulary id of code 0.
        boi_token: Begin-image marker; ``eoi_token``: end-image marker.
        image_size: Side of the square image the VQ encoder takes.
        templates: Prompt text of the two layouts.
    """

    family = FAMILY

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        vqgan: VQGAN,
        image_token_offset: int,
        boi_token: str,
        eoi_token: str,
        image_size: int,
        templates: PromptTemplates | None = None,
    ) -> None:
        self.image_token_offset = int(image_token_offset)
        codebook = int(vqgan.vq.config.num_embeddings)
        code_to_token = torch.arange(self.image_token_offset, self.image_token_offset + codebook)
        super().__init__(model, tokenizer, vqgan, code_to_token, boi_token, eoi_token, image_size, templates)
        self.boi_token, self.eoi_token = boi_token, eoi_token

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the language model, tokenizer, VQGAN files and ``worldboot.json`` to ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        unwrap(self.model).save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        (path / VQ_CONFIG_FILE).write_text(json.dumps(self.vqgan.vq.config.to_dict(), indent=2))
        for name, module in ((ENCODER_FILE, self.vqgan.vq), (DECODER_FILE, self.vqgan.decoder)):
            save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path / name))
        meta = {
            "family": FAMILY,
            "image_size": self.image_size,
            "image_token_offset": self.image_token_offset,
            "boi_token": self.boi_token,
            "eoi_token": self.eoi_token,
            "templates": dataclasses.asdict(self.templates),
        }
        (path / META_FILE).write_text(json.dumps(meta, indent=2))


def causal_lm_class(config: Any, where: str | os.PathLike[str] = "") -> type:
    """transformers' ``*ForCausalLM`` class of a config (what ``AutoModelForCausalLM`` picks);
    ``where`` (its file) prefixes the error."""
    try:
        return MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    except KeyError:
        prefix = f"{where}: " if where else ""
        raise ModelError(f"{prefix}a {config.model_type} model is not a causal LM transformers knows") from None


def _load_vqgan(path: Path) -> VQGAN:
    """The model directory's VQGAN: worldboot's files, else a taming ``tokenizer/`` folder."""
    if (path / VQ_CONFIG_FILE).is_file():
        file = path / VQ_CONFIG_FILE
        data = read_json(file)
        if not isinstance(data, dict):
            raise ModelError(f"{file}: holds a JSON {type(data).__name__}, where a VQ config is an object of keys")
        config = build_config(file, lambda: ChameleonVQVAEConfig(**data))
        field_value({"channel_multiplier": list(config.channel_multiplier or [])}, "channel_multiplier", "counts",
                    str(file))
        vq = ChameleonVQVAE(config)
        decoder = ChameleonVQDecoder(config)
        load_state(vq, load_safetensors(path / ENCODER_FILE), path / ENCODER_FILE, file)
        load_state(decoder, load_safetensors(path / DECODER_FILE), path / DECODER_FILE, file)
        return VQGAN(vq, decoder)
    folder = path / "tokenizer"
    ckpt = vqgan_checkpoint(folder)
    if ckpt is None or not (folder / "vqgan.yaml").is_file():
        raise ModelError(
            f"{path} has neither {VQ_CONFIG_FILE} + {ENCODER_FILE} + {DECODER_FILE} nor a tokenizer/ folder with "
            "vqgan.yaml and vqgan.ckpt (or vqgan.safetensors)"
        )
    return build_taming_vqgan(ckpt, folder / "vqgan.yaml")


def load_causal_vq(
    path: str | os.PathLike[str],
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    image_size: int | None = None,
) -> CausalVQBackbone:
    """Load a ``causal-vq`` model directory (see the module docstring).

    Raises:
        ModelError: A missing or damaged file, or a ``worldboot.json`` that lacks a field.
    """
    path = Path(path)
    meta = read_meta(path)
    missing = [k for k in ("image_token_offset", "boi_token", "eoi_token") if k not in meta]
    if missing:
        raise ModelError(f"{path / META_FILE} lacks {', '.join(missing)} (a causal-vq model needs them)")
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    config = read_config(path, AutoConfig)
    model_class = world_class(causal_lm_class(config, path / "config.json"))
    model = load_weights(model_class, path, config, dtype=dtype or torch.float32, device_map=device_map)
    tokenizer = load_tokenizer(path)
    vqgan = _load_vqgan(path).to(device=model.device, dtype=model.dtype)
    templates = PromptTemplates(**meta["templates"]) if "templates" in meta else None
    size = image_size or meta.get("image_size") or vqgan.vq.config.resolution
    model.eval()
    vqgan.eval()
    return CausalVQBackbone(model, tokenizer, vqgan, meta["image_token_offset"], meta["boi_token"],
                            meta["eoi_token"], int(size), templates)


def family_of(path: str | os.PathLike[str]) -> str:
    """The family a model directory says it is (``chameleon`` without ``worldboot.json``)."""
    return str(read_meta(path).get("family", "chameleon"))


def tiny_causal_vq(seed: int = 0, templates: PromptTemplates | None = None) -> CausalVQBackbone:
    """A randomly initialised tiny causal-vq backbone from real configs: a 2-layer Gemma, a
    byte-level BPE tokenizer with ``<boi>``/``<eoi>``, and the tiny Chameleon VQ (512 codes
    after the text vocabulary)."""
    from transformers import GemmaConfig, PreTrainedTokenizerFast

    from worldboot.models.tiny import TinyChameleonSpec, build_tokenizer

    spec = TinyChameleonSpec()
    text = build_tokenizer(0, spec.text_vocab)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=text.backend_tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", additional_special_tokens=["<boi>", "<eoi>"],
    )
    offset = len(tokenizer)
    vq_config = ChameleonVQVAEConfig(
        embed_dim=spec.vq_embed_dim, num_embeddings=spec.codebook, latent_channels=spec.vq_embed_dim,
        base_channels=spec.vq_base_channels, channel_multiplier=list(spec.vq_channel_multiplier), num_res_blocks=1,
        attn_resolutions=[], resolution=spec.image_size,
    )
    config = GemmaConfig(
        vocab_size=offset + spec.codebook, hidden_size=spec.hidden, intermediate_size=spec.intermediate,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        head_dim=spec.hidden // spec.heads, max_position_embeddings=spec.max_positions,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = world_class(causal_lm_class(config))(config).eval()
    vqgan = VQGAN(ChameleonVQVAE(vq_config), ChameleonVQDecoder(vq_config)).eval()
    return CausalVQBackbone(model, tokenizer, vqgan, offset, "<boi>", "<eoi>", spec.image_size, templates)


def save_tiny_causal_vq(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """:func:`tiny_causal_vq` saved as a model directory; returns the path."""
    path = Path(path)
    tiny_causal_vq(seed).save(path)
    return path


def assemble_causal_vq(
    llm: str | os.PathLike[str],
    vqgan: str | os.PathLike[str],
    out: str | os.PathLike[str],
    image_token_offset: int,
    boi_token: str,
    eoi_token: str,
    image_size: int | None = None,
) -> Path:
    """Make a causal-vq model directory from a transformers causal LM folder (e.g. Liquid-7B)
    and a taming VQGAN folder (e.g. Anole's ``tokenizer/``): the LM's files are linked (not
    copied), the VQGAN folder is copied to ``tokenizer/``, and ``worldboot.json`` is written.

    Raises:
        ModelError: The LM is not a causal LM, the tokenizer lacks a marker, or the vocabulary
            does not reach ``image_token_offset + K`` (checked before anything is written).
    """
    import shutil

    llm, vqgan, out = Path(llm), Path(vqgan), Path(out)
    for folder, what in ((llm, "language model folder"), (vqgan, "VQGAN folder")):
        if not folder.is_dir():  # not a hub name either: from_pretrained would spend half a minute on the hub
            raise unless_loop(folder, ModelError(f"{what} not found: {folder}" if not folder.exists()
                                                 else f"{folder} is a file: give the {what}"))
    config = read_config(llm, AutoConfig)
    try:
        tokenizer = AutoTokenizer.from_pretrained(llm, local_files_only=True)
    except (OSError, ValueError) as err:
        raise ModelError(f"{llm}: not a transformers model folder ({str(err).splitlines()[0]})") from None
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise ModelError(f"{llm}: a {config.model_type} model is not a causal LM transformers knows")
    for marker in (boi_token, eoi_token):
        tid = tokenizer.convert_tokens_to_ids(marker)
        if tid is None or tid == tokenizer.unk_token_id:
            raise ModelError(f"{llm}: its tokenizer has no token {marker!r} (--boi/--eoi name the image markers)")
    ckpt = vqgan_checkpoint(vqgan)
    if ckpt is None or not (vqgan / "vqgan.yaml").is_file():
        raise ModelError(f"{vqgan}: needs vqgan.yaml and vqgan.ckpt (or vqgan.safetensors)")
    # Loaded as the model directory will load it, so that a broken VQGAN is refused now, not by
    # every later command.
    codes = build_taming_vqgan(ckpt, vqgan / "vqgan.yaml").codebook_size
    vocab = int(getattr(config, "vocab_size", 0) or getattr(config.get_text_config(), "vocab_size", 0))
    if image_token_offset < 0 or image_token_offset + codes > vocab:
        raise ModelError(
            f"{llm}: image tokens {image_token_offset}-{image_token_offset + codes - 1} do not fit its vocabulary of {vocab}"
        )
    if boi_token == eoi_token:
        raise ModelError(f"--boi and --eoi are both {boi_token!r}: an image needs two different markers")
    # Image codes must not take the ids of the markers or the special tokens (a model's image
    # tokens may have names in its tokenizer, so text tokens are not checked).
    special = {tokenizer.convert_tokens_to_ids(m): m for m in (boi_token, eoi_token)}
    special.update({tid: tok for tok, tid in zip(tokenizer.all_special_tokens, tokenizer.all_special_ids, strict=True)})
    clash = sorted(t for t in special if t is not None and image_token_offset <= t < image_token_offset + codes)
    if clash:
        raise ModelError(
            f"{llm}: image tokens {image_token_offset}-{image_token_offset + codes - 1} take the id {clash[0]} of "
            f"{special[clash[0]]!r}: --image-token-offset must put the codes past the markers and special tokens"
        )
    if image_size is not None and image_size < 0:
        raise ModelError(f"--image-size must be a positive number of pixels, got {image_size}")
    check_new_model_dir(out, llm, vqgan)
    link_model_files(llm, out, skip=META_FILE)
    shutil.copytree(vqgan, out / "tokenizer", dirs_exist_ok=True)
    meta = {"family": FAMILY, "image_token_offset": image_token_offset, "boi_token": boi_token, "eoi_token": eoi_token,
            "templates": dataclasses.asdict(PromptTemplates())}
    if image_size:
        meta["image_size"] = image_size
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out
