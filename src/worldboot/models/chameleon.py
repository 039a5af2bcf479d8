"""Chameleon / Anole as a worldboot backbone, on transformers.

Two things transformers' ``ChameleonForConditionalGeneration`` does not do for us:

* its ``forward`` sets every image-token logit to the lowest float, so images cannot be
  generated and a loss on image tokens is infinite: :class:`ChameleonWorldLM` calls the model
  and ``lm_head`` without that mask;
* its VQ model has no decoder: :mod:`worldboot.models.vq` adds one.

A worldboot model directory holds the transformers model (``config.json``,
``model.safetensors``), its tokenizer, ``vq_decoder.safetensors`` and ``worldboot.json``
(family, image size, prompt templates). Anole-7B's release folder becomes one with
``worldboot convert anole`` (:mod:`worldboot.models.convert_anole`); a transformers-format
Chameleon directory plus Anole's ``tokenizer/`` directory (``vqgan.yaml`` and ``vqgan.ckpt`` or
``vqgan.safetensors``) also loads through :func:`load_chameleon`. Decoding lives in
:mod:`worldboot.models.sampling`.

Everything but loading and saving is :class:`~worldboot.models.token_lm.TokenLMBackbone`,
shared with the other families.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase
from transformers.models.chameleon.modeling_chameleon import ChameleonForConditionalGeneration

from worldboot.errors import ModelError, unless_loop
from worldboot.models.backbone import (
    PromptTemplates,
)
from worldboot.models.files import load_safetensors, load_tokenizer, read_json
from worldboot.models.folder import load_state, load_weights, read_config, read_meta
from worldboot.models.lm_forward import unwrap, world_forward
from worldboot.models.token_lm import TokenLMBackbone
from worldboot.models.vq import VQGAN, ChameleonVQDecoder, load_taming_vqgan, vqgan_checkpoint

DECODER_FILE = "vq_decoder.safetensors"
META_FILE = "worldboot.json"
BOI_TOKEN = "<racm3:break>"
EOI_TOKEN = "<eoss>"


class ChameleonWorldLM(ChameleonForConditionalGeneration):
    """Chameleon whose image-token logits are left as the model computes them, and whose
    forward computes only the logits asked for (:func:`~worldboot.models.lm_forward.world_forward`)."""

    forward = world_forward
    # The image tokenizer stays in float32 whatever the language model's dtype, as in Anole's
    # reference: in bf16 4 % of a 512-px image's codes flip and the decode is off by up to 39/255.
    _keep_in_fp32_modules_strict = ["vqmodel"]


class ChameleonBackbone(TokenLMBackbone):
    """A Chameleon-family model (Chameleon, Anole) as a :class:`~worldboot.models.backbone.Backbone`.

    Args:
        model: ``ChameleonWorldLM`` (or a peft/DDP wrapper around it).
        tokenizer: The text tokenizer whose vocabulary holds the image-token names.
        decoder: VQ decoder matching ``model.model.vqmodel``.
        image_size: Side of the square image the VQ encoder takes.
        templates: Prompt text of the two layouts.
    """

    family = "chameleon"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        decoder: ChameleonVQDecoder,
        image_size: int,
        templates: PromptTemplates | None = None,
    ) -> None:
        core = unwrap(model)
        codebook = core.config.vq_config.num_embeddings
        img2bpe = core.model.vocabulary_mapping.img2bpe
        missing = [c for c in range(codebook) if c not in img2bpe]
        if missing:
            raise ModelError(f"vocabulary has no image token for codes {missing[:5]}...")
        code_to_token = torch.tensor([img2bpe[c] for c in range(codebook)], dtype=torch.long)
        super().__init__(model, tokenizer, VQGAN(core.model.vqmodel, decoder), code_to_token, BOI_TOKEN, EOI_TOKEN,
                         image_size, templates)

    # -- persistence ------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model, tokenizer, decoder and ``worldboot.json`` to ``path``."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.core.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        state = {k: v.contiguous() for k, v in self.vqgan.decoder.state_dict().items()}
        save_file(state, str(path / DECODER_FILE))
        meta = {"family": self.family, "image_size": self.image_size, "templates": dataclasses.asdict(self.templates)}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))


def _check_dir(path: Path, required: Sequence[str]) -> None:
    if path.is_file():
        raise ModelError(f"{path} is a file: give the model's folder")
    if not path.is_dir():
        raise unless_loop(path, ModelError(f"model directory not found: {path}"))
    missing = [name for name in required if not (path / name).exists()]
    if missing:
        hint = ""
        if (path / "models" / "7b" / "params.json").is_file():  # Meta's layout, as Anole ships it
            hint = f": it looks like Anole's release; make a model of it with worldboot convert anole {path} --out DIR"
        raise ModelError(f"model directory {path} is missing {', '.join(missing)}{hint}")


def refuse_old_conversion(path: Path) -> None:
    """One line for a directory written by Anole's modified transformers converter (its
    ``q_norm`` is ``[head_dim]``: transformers 5 cannot load it, with a bare RuntimeError).

    Checked by :func:`load_chameleon` before it loads, and by ``worldboot convert anole`` when
    given such a directory instead of the release folder.

    Raises:
        ModelError: Saying to convert the release folder instead.
    """
    from safetensors import SafetensorError, safe_open

    files = sorted(f for f in path.glob("*.safetensors") if not f.name.startswith("."))  # not a write in flight
    index = path / "model.safetensors.index.json"
    key = "model.layers.0.self_attn.q_norm.weight"
    if index.is_file():
        weight_map = read_json(index)
        weight_map = weight_map.get("weight_map") if isinstance(weight_map, dict) else None
        shard = weight_map.get(key) if isinstance(weight_map, dict) else None
        files = [path / shard] if isinstance(shard, str) else []
    for f in files:
        try:
            handle = safe_open(str(f), framework="pt")
        except (OSError, SafetensorError):
            continue  # damaged or missing: the loader names it
        with handle as fh:
            if key in fh.keys() and len(fh.get_slice(key).get_shape()) == 1:  # noqa: SIM118 - safe_open has no __contains__
                raise ModelError(
                    f"{path} was converted by Anole's modified transformers (q_norm of shape [head_dim]), which "
                    "transformers 5 cannot load: convert the release folder instead: "
                    "worldboot convert anole ANOLE_RELEASE_DIR --out DIR"
                )


def load_chameleon(
    path: str | os.PathLike[str],
    vqgan_dir: str | os.PathLike[str] | None = None,
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    image_size: int | None = None,
) -> ChameleonBackbone:
    """Load a Chameleon-family backbone.

    Args:
        path: A worldboot model directory, or a transformers-format Chameleon/Anole directory.
        vqgan_dir: Anole's ``tokenizer/`` directory with ``vqgan.yaml`` and ``vqgan.ckpt`` (or
            ``vqgan.safetensors``); needed when ``path`` has no ``vq_decoder.safetensors``
            (default: a ``tokenizer/`` folder inside ``path`` or beside it, as in Anole's
            release). Its encoder weights must equal the ones inside the model, its decoder
            weights are loaded strictly.
        dtype: The language model's dtype, e.g. ``"bfloat16"`` on GPUs; float32 when None. The
            image tokenizer (encoder, codebook and decoder) stays in float32.
        device_map: Passed to ``from_pretrained`` (``"auto"`` spreads a 7B model over GPUs).
        image_size: Override of the image side (default: ``worldboot.json``, else the VQ
            config's resolution).

    Returns:
        The backbone, in eval mode.

    Raises:
        ModelError: A missing or damaged file, or a ``config.json`` or ``worldboot.json`` that
            does not fit the weights or worldboot, naming the file.
    """
    from transformers import ChameleonConfig

    path = Path(path)
    _check_dir(path, ["config.json"])
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    meta = read_meta(path)
    if meta.get("family", "chameleon") != "chameleon":
        raise ModelError(f"{path} holds a {meta['family']} model, not chameleon")
    refuse_old_conversion(path)  # transformers 5 raises a bare RuntimeError on it
    config = read_config(path, ChameleonConfig)
    model = load_weights(ChameleonWorldLM, path, config, dtype=dtype or torch.float32, device_map=device_map)
    tokenizer = load_tokenizer(path)
    decoder = ChameleonVQDecoder(model.config.vq_config)
    if vqgan_dir is None and not (path / DECODER_FILE).is_file():
        # Anole ships its VQGAN as tokenizer/vqgan.ckpt; look inside and beside the model folder.
        for guess in (path / "tokenizer", path.parent / "tokenizer"):
            if vqgan_checkpoint(guess) is not None and (guess / "vqgan.yaml").is_file():
                vqgan_dir = guess
                break
    if (path / DECODER_FILE).is_file():
        load_state(decoder, load_safetensors(path / DECODER_FILE), path / DECODER_FILE, path / "config.json")
    elif vqgan_dir is not None:
        vq_dir = Path(vqgan_dir)
        ckpt = vqgan_checkpoint(vq_dir) or vq_dir / "vqgan.ckpt"
        _, vq_sd, dec_sd = load_taming_vqgan(ckpt, vq_dir / "vqgan.yaml")
        decoder.load_state_dict(dec_sd, strict=True)
        ours = model.model.vqmodel.state_dict()
        for key, value in vq_sd.items():
            if key not in ours or ours[key].shape != value.shape:
                raise ModelError(f"{vq_dir}: VQ key {key} does not fit the model's tokenizer")
            if not torch.equal(ours[key].cpu(), value.to(ours[key].dtype)):
                # The decoder would then draw codes another encoder assigned.
                raise ModelError(
                    f"{ckpt}: its VQ encoder differs from the model's ({key}); the tokenizer folder belongs "
                    "to another model"
                )
    else:
        raise ModelError(
            f"{path} has no {DECODER_FILE} and no tokenizer/vqgan.ckpt inside or beside it; "
            "put Anole's tokenizer/ folder (vqgan.ckpt or vqgan.safetensors, and vqgan.yaml) there"
        )
    decoder.to(device=model.device, dtype=model.model.vqmodel.quant_conv.weight.dtype)  # float32, as the encoder
    templates = PromptTemplates(**meta["templates"]) if "templates" in meta else None
    size = image_size or meta.get("image_size") or model.config.vq_config.resolution
    model.eval()
    return ChameleonBackbone(model, tokenizer, decoder, int(size), templates)
