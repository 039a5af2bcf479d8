"""The ``emu3`` family: BAAI's Emu3 on transformers' own classes (``Emu3ForConditionalGeneration``
and its ``Emu3VQVAE``), as a :class:`~worldboot.models.backbone.Backbone`.

What sets Emu3 apart from the other two families, and where this module handles it:

* **The image layout.** An image is ``<|image start|>`` + its grid as text (``"64*64"``) +
  ``<|image token|>``, then each row of codes followed by a row end (``<|extra_200|>``), then
  ``<|extra_201|>`` + ``<|image end|>``: :meth:`Emu3Backbone.image_open`,
  :meth:`~Emu3Backbone.image_close` and the row ends of
  :class:`~worldboot.models.token_lm.TokenLMBackbone`. Row ends are layout, not predictions: no
  label, no recognition weight, forced in place when an image is sampled.
* **The vocabulary mapping.** Code ``k`` is the token ``<|visual token{k:06d}|>`` of the
  vocabulary (``config.vocabulary_map``), read through transformers'
  ``Emu3ImageVocabularyMapping``.
* **Images that are not square.** Emu3 tokenizes an image at its own aspect ratio. worldboot's
  caches hold one number of codes per model, so a model directory has one grid, set by its
  image shape (``--image-size 384x512``: height x width, multiples of the VQ's 8-pixel patch);
  every image is scaled to cover it and centre-cropped, and a prediction has the source's grid
  and resolution prefix.
* **The VQ model is transformers' own** (``encode`` and ``decode``); its pre-quantisation
  features, for Eq. 2, are read with a forward hook on its quantizer, not recomputed.

A model directory is transformers' format (``Emu3-Gen-hf``, ``Emu3-Chat-hf``: ``config.json`` of
``model_type: emu3``, the weights, the tokenizer and ``preprocessor_config.json``), with
worldboot's ``worldboot.json`` (image shape, prompt templates) once saved by worldboot.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import Emu3Config, Emu3ForConditionalGeneration, PreTrainedTokenizerBase
from transformers.models.emu3.modeling_emu3 import Emu3ImageVocabularyMapping, Emu3VQVAE

from worldboot.errors import ModelError
from worldboot.models.backbone import PromptTemplates
from worldboot.models.files import load_tokenizer, read_json
from worldboot.models.folder import load_weights, read_config, read_meta
from worldboot.models.lm_forward import unwrap, world_forward
from worldboot.models.token_lm import TokenLMBackbone

FAMILY = "emu3"
META_FILE = "worldboot.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
#: The released tokenizer's names for the layout tokens (``tokenizer.boi_token`` etc. when set).
LAYOUT_TOKENS = {
    "boi_token": "<|image start|>",
    "eoi_token": "<|image end|>",
    "image_wrapper_token": "<|image token|>",
    "eof_token": "<|extra_201|>",
    "eol_token": "<|extra_200|>",
}
#: worldboot's default image shape for Emu3: Anole's 512 px, so that the dynamics layout's two
#: images (2 x 64 x 65 tokens) fit Emu3's 9,216 positions; Emu3-Gen draws 720 x 720 by default.
DEFAULT_SHAPE = (512, 512)


class Emu3WorldLM(Emu3ForConditionalGeneration):
    """``Emu3ForConditionalGeneration`` whose forward computes only the logits asked for
    (:func:`~worldboot.models.lm_forward.world_forward`); its VQ model stays in float32."""

    forward = world_forward
    _keep_in_fp32_modules_strict = ["vqmodel"]


class Emu3ImageTokenizer(torch.nn.Module):
    """transformers' ``Emu3VQVAE`` at one token grid, with worldboot's image-tokenizer interface.

    Args:
        vq: The model's VQ (shared with it, not copied).
        grid_hw: Rows and columns of codes.
        mean: The processor's per-channel mean, on pixels in [0, 1] (``preprocessor_config.json``).
        std: Its per-channel standard deviation.
    """

    def __init__(self, vq: Emu3VQVAE, grid_hw: tuple[int, int], mean: Iterable[float] = (0.5, 0.5, 0.5),
                 std: Iterable[float] = (0.5, 0.5, 0.5)) -> None:
        super().__init__()
        self.vq = vq
        self.grid_hw = (int(grid_hw[0]), int(grid_hw[1]))
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def codebook_size(self) -> int:
        """Number of codebook entries ``K``."""
        return int(self.vq.config.codebook_size)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the encoder takes pixels in."""
        return self.vq.quant_conv.conv.weight.dtype

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] to the processor's normalisation (the identity for mean = std = 0.5)."""
        return (((pixels.float() + 1.0) / 2.0 - self.mean) / self.std).to(pixels.dtype)

    def encode(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixels ``[B, 3, H, W]`` in [-1, 1] to codes ``[B, L]`` and the quantizer's input
        features ``[B, L, D]`` (the vectors it snaps to the codebook: Eq. 2's space)."""
        batch, _, height, width = pixels.shape
        seen: list[torch.Tensor] = []
        hook = self.vq.quantize.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
        try:
            sizes = torch.tensor([[height, width]] * batch)
            out = self.vq.encode(self.normalise(pixels), sizes)
        finally:
            hook.remove()
        codes = torch.stack([t.reshape(-1) for t in out.image_tokens])
        features = seen[0][:, 0]  # [B, T=1, C, h, w] for images: the one time step
        features = features.permute(0, 2, 3, 1).reshape(batch, -1, features.shape[1])
        return codes, features

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, L]`` to pixels ``[B, 3, H, W]`` in [-1, 1]."""
        rows, cols = self.grid_hw
        pixels = self.vq.decode(codes.view(codes.shape[0], rows, cols)).float()
        return ((pixels * self.std + self.mean) * 2.0 - 1.0).clamp(-1.0, 1.0)


class Emu3Backbone(TokenLMBackbone):
    """An Emu3 model (Emu3-Gen, Emu3-Chat) as a :class:`~worldboot.models.backbone.Backbone`.

    Args:
        model: :class:`Emu3WorldLM` (or a peft/DDP wrapper around it).
        tokenizer: Its tokenizer, holding the layout tokens.
        image_shape: Height and width in pixels, multiples of the VQ's patch.
        templates: Prompt text of the two layouts.
        mean: The processor's per-channel mean (see :class:`Emu3ImageTokenizer`).
        std: Its per-channel standard deviation.
    """

    family = FAMILY

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        image_shape: tuple[int, int] = DEFAULT_SHAPE,
        templates: PromptTemplates | None = None,
        mean: Iterable[float] = (0.5, 0.5, 0.5),
        std: Iterable[float] = (0.5, 0.5, 0.5),
    ) -> None:
        core = unwrap(model)
        vq = core.model.vqmodel
        patch = int(vq.spatial_scale_factor)
        height, width = (int(v) for v in image_shape)
        if height <= 0 or width <= 0 or height % patch or width % patch:
            raise ModelError(f"image shape {height}x{width}: Emu3 needs multiples of its {patch}-pixel patch")
        self._shape = (height, width)
        mapping = Emu3ImageVocabularyMapping(core.config.vocabulary_map or {})
        codebook = int(vq.config.codebook_size)
        img2bpe = mapping.img2bpe
        missing = [c for c in range(codebook) if c not in img2bpe]
        if missing:
            raise ModelError(f"the vocabulary map has no visual token for codes {missing[:5]} (of {codebook})")
        code_to_token = torch.tensor([img2bpe[c] for c in range(codebook)], dtype=torch.long)
        names = {key: getattr(tokenizer, key, None) or name for key, name in LAYOUT_TOKENS.items()}
        tokenizer_ = Emu3ImageTokenizer(vq, (height // patch, width // patch), mean, std)
        super().__init__(model, tokenizer, tokenizer_, code_to_token, names["boi_token"], names["eoi_token"],
                         max(height, width), templates)
        self.wrapper_id = self._special(names["image_wrapper_token"])
        self.eof_id = self._special(names["eof_token"])
        self.row_end_id = mapping.eol_token_id if mapping.eol_token_id is not None else self._special(names["eol_token"])
        rows, cols = self.grid_hw
        self._opening = [self.boi_id, *self._text(f"{rows}*{cols}"), self.wrapper_id]

    @property
    def image_shape(self) -> tuple[int, int]:
        """Height and width in pixels of the images the tokenizer takes."""
        return self._shape

    def image_open(self) -> list[int]:
        """Begin-image, the grid as text (rows*columns), then Emu3's image-token marker."""
        return list(self._opening)

    def image_close(self) -> list[int]:
        """End-of-frame, then end-image."""
        return [self.eof_id, self.eoi_id]

    def layout_ids(self) -> list[int]:
        """The layout's own tokens (not the grid's digits, which are text)."""
        return sorted({self.boi_id, self.eoi_id, self.wrapper_id, self.eof_id, int(self.row_end_id)})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the model and tokenizer (transformers' format) and ``worldboot.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.core.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        meta = {"family": FAMILY, "image_shape": list(self._shape), "templates": dataclasses.asdict(self.templates),
                "mean": self.vqgan.mean.flatten().tolist(), "std": self.vqgan.std.flatten().tolist()}
        (path / META_FILE).write_text(json.dumps(meta, indent=2))


def parse_shape(text: str | int | Iterable[int]) -> tuple[int, int]:
    """``512``, ``"512"`` or ``"384x512"`` (height x width) as ``(height, width)``."""
    if isinstance(text, int):
        return text, text
    if not isinstance(text, str):
        height, width = (int(v) for v in text)
        return height, width
    match = re.fullmatch(r"\s*(\d+)\s*(?:[x*]\s*(\d+))?\s*", text)
    if not match:
        raise ModelError(f"image size {text!r}: give pixels as 512 or height x width as 384x512")
    height = int(match.group(1))
    return height, int(match.group(2) or height)


def is_emu3_dir(path: str | os.PathLike[str]) -> bool:
    """Whether a folder holds a transformers Emu3 model (``config.json`` of ``model_type: emu3``)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == FAMILY
    except (OSError, ValueError, AttributeError):
        return False


def load_emu3(
    path: str | os.PathLike[str],
    dtype: torch.dtype | str | None = None,
    device_map: str | dict | None = None,
    image_size: str | int | None = None,
) -> Emu3Backbone:
    """Load an Emu3 directory in transformers' format (see the module docstring).

    Args:
        path: The folder.
        dtype: Weight type of the language model (the VQ stays in float32).
        device_map: Passed to ``from_pretrained``.
        image_size: The image shape (``512`` or ``"384x512"``); else ``worldboot.json``'s, else
            :data:`DEFAULT_SHAPE`.

    Raises:
        ModelError: A missing or damaged file, naming it.
    """
    path = Path(path)
    meta = read_meta(path)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    config = read_config(path, Emu3Config)
    model = load_weights(Emu3WorldLM, path, config, what="Emu3 model", dtype=dtype or torch.float32,
                         device_map=device_map)
    tokenizer = load_tokenizer(path)
    mean, std = _normalisation(path, meta)
    shape = parse_shape(image_size) if image_size else tuple(meta.get("image_shape") or DEFAULT_SHAPE)
    templates = PromptTemplates(**meta["templates"]) if "templates" in meta else None
    model.eval()
    return Emu3Backbone(model, tokenizer, shape, templates, mean, std)


def _normalisation(path: Path, meta: dict[str, Any]) -> tuple[list[float], list[float]]:
    """The pixel mean and std: ``worldboot.json``'s, else the processor's, else 0.5 and 0.5."""
    if "mean" in meta and "std" in meta:
        return list(meta["mean"]), list(meta["std"])
    proc = read_json(path / PREPROCESSOR_FILE) if (path / PREPROCESSOR_FILE).is_file() else {}
    if not isinstance(proc, dict):
        raise ModelError(f"{path / PREPROCESSOR_FILE}: holds a JSON {type(proc).__name__}, where a processor's "
                         "config is an object of keys")
    mean, std = proc.get("image_mean", [0.5] * 3), proc.get("image_std", [0.5] * 3)
    if not all(isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                           for x in v) for v in (mean, std)):
        raise ModelError(f"{path / PREPROCESSOR_FILE}: image_mean and image_std need one number per colour channel")
    return [float(v) for v in mean], [float(v) for v in std]


def prepare_emu3(src: str | os.PathLike[str], out: str | os.PathLike[str], image_size: str | int | None = None,
                 templates: PromptTemplates | None = None) -> Path:
    """Make a worldboot model directory from an Emu3 folder in transformers' format: the files
    are linked (not copied) and ``worldboot.json`` pins the image shape, the prompt templates
    and the processor's normalisation. Nothing is loaded: it checks the files first.

    Raises:
        ModelError: In one line naming the file: not an Emu3 folder, BAAI's original layout
            (custom code: transformers' ``convert_emu3_weights_to_hf.py`` converts it first), a
            vocabulary map without every code's visual token, a tokenizer without the layout
            tokens, or an image shape the VQ cannot take.
    """
    from worldboot.models.files import check_new_model_dir, link_model_files

    src, out = Path(src), Path(out)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{config_file} not found: give an Emu3 folder in transformers' format (Emu3-Gen-hf)")
    config = read_json(config_file)
    if not isinstance(config, dict):
        raise ModelError(f"{config_file}: holds a JSON {type(config).__name__}, where a model's config is an object of keys")
    kind = str(config.get("model_type", ""))
    if kind != FAMILY:
        if kind.lower() == FAMILY or "auto_map" in config:
            raise ModelError(f"{config_file}: BAAI's original Emu3 layout (model_type {kind!r}, custom code); convert "
                             "it with transformers' convert_emu3_weights_to_hf.py first, then run this on its output")
        raise ModelError(f"{config_file}: model_type {kind!r} is not an Emu3 model ({FAMILY})")
    read_config(src, Emu3Config)  # every value as transformers takes it, before the ones read here
    vq = config.get("vq_config") or {}
    codebook = int(vq.get("codebook_size", 32768))
    vocab = config.get("vocabulary_map") or {}
    visual = {name for name in vocab if name.startswith("<|visual token")}
    if len(visual) < codebook:
        raise ModelError(f"{config_file}: vocabulary_map names {len(visual)} visual tokens for {codebook} codes")
    missing = [name for name in LAYOUT_TOKENS.values() if name not in vocab]
    if missing:
        raise ModelError(f"{config_file}: vocabulary_map lacks the layout tokens {', '.join(missing)}")
    patch = 2 ** (len(vq.get("channel_multiplier", [1, 2, 2, 4])) - 1)
    shape = parse_shape(image_size) if image_size else DEFAULT_SHAPE
    if shape[0] <= 0 or shape[1] <= 0 or shape[0] % patch or shape[1] % patch:
        raise ModelError(f"--image-size {shape[0]}x{shape[1]}: Emu3 needs multiples of its {patch}-pixel patch")
    mean, std = _normalisation(src, {})
    check_new_model_dir(out, src)
    link_model_files(src, out, skip=META_FILE)
    meta = {"family": FAMILY, "image_shape": list(shape), "templates": dataclasses.asdict(templates or PromptTemplates()),
            "mean": mean, "std": std}
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    return out
