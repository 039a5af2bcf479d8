"""Image metrics of the paper's Appendix D: L1, CLIP-I, CLIP-T and DINO.

* **L1**: the mean absolute pixel difference between prediction and target, with pixels in
  [0, 1], averaged over pixels and RGB channels. Predictions and targets rarely share a size
  (Chameleon outputs squares, benchmark targets are not; diffusion editors pick their own size),
  so both are first brought to a common geometry: by default each is centre-cropped to a square
  (what Chameleon's preprocessing does to the source) and resized to ``l1_size`` x ``l1_size``
  with bicubic filtering; ``l1_crop: none`` resizes without cropping. Identical images give 0.
* **CLIP-I**: cosine similarity of the CLIP image embeddings of prediction and target.
* **CLIP-T**: cosine similarity of the CLIP embeddings of the prediction and a text: the action
  (default) or, with ``clip_t_text: caption``, the sample's ``meta.caption`` when it has one. The
  paper used a BLIP caption of the target, so these numbers are not comparable with its Table 4.
* **DINO**: cosine similarity of the DINOv2 CLS embeddings of prediction and target.

CLIP and DINOv2 run through transformers (``CLIPModel``, ``Dinov2Model``) from directories the
user provides (``save_pretrained`` layout with the image processor and, for CLIP, the tokenizer).
Without a directory the columns are skipped and the report says so; nothing is faked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from worldboot.errors import ModelError


@dataclass
class MetricsConfig:
    """Which image metrics to compute and from which models.

    Attributes:
        l1: Compute L1 against the target.
        l1_size: Side of the common square size for L1.
        l1_crop: ``square`` centre-crops both images to a square before resizing; ``none``
            resizes as they are (distorting a non-square image).
        clip: Directory of a CLIP model (``CLIPModel`` + image processor + tokenizer); empty skips
            CLIP-I and CLIP-T.
        dino: Directory of a DINOv2 model (``Dinov2Model`` + image processor); empty skips DINO.
        clip_t_text: Text CLIP-T compares the prediction with: the ``action`` or the sample's
            ``caption`` (falls back to the action when a sample has none).
        batch_size: Images per forward pass of CLIP/DINO.
        device: Torch device of CLIP/DINO.
    """

    l1: bool = True
    l1_size: int = 256
    l1_crop: Literal["square", "none"] = "square"
    clip: str = ""
    dino: str = ""
    clip_t_text: Literal["action", "caption"] = "action"
    batch_size: int = 16
    device: str = "cpu"


def _center_square(img: Image.Image) -> Image.Image:
    side = min(img.size)
    x0, y0 = (img.width - side) // 2, (img.height - side) // 2
    return img.crop((x0, y0, x0 + side, y0 + side))


def l1_pixels(img: Image.Image, size: int = 256, crop: str = "square") -> np.ndarray:
    """The image as ``[size, size, 3]`` float32 in [0, 1], in L1's common geometry."""
    img = img.convert("RGB")
    if crop == "square":
        img = _center_square(img)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 255.0


def l1_distance(pred: Image.Image, target: Image.Image, size: int = 256, crop: str = "square") -> float:
    """Mean absolute pixel difference in [0, 1] at a common size (see the module docstring)."""
    return float(np.abs(l1_pixels(pred, size, crop) - l1_pixels(target, size, crop)).mean())


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two ``[N, D]`` tensors."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def _check_model_dir(path: str | os.PathLike[str], what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelError(f"{what} model directory {path} has no config.json")
    if not (path / "preprocessor_config.json").is_file():
        raise ModelError(f"{what} model directory {path} has no preprocessor_config.json (image processor)")
    return path


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output holds the projected embedding;
    # 4.x returned the tensor itself.
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class _ImageEmbedder:
    """What the CLIP and DINOv2 scorers share: a model and its image processor loaded from a
    directory (one line when it is not such a model), and batched, L2-normalised embeddings.

    A subclass names its model (``what``, ``label``), loads it (:meth:`_load`, and anything
    else in :meth:`_load_more`) and embeds one batch of pixels (:meth:`_image_features`).
    """

    what = ""  # in "<what> model directory ... has no config.json"
    label = ""  # in "cannot load <label> from ..."

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 16) -> None:
        from transformers import AutoImageProcessor

        self.path = _check_model_dir(path, self.what)
        try:
            self.model = self._load(self.path).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(self.path)
            self._load_more(self.path)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"cannot load {self.label} from {self.path}: {str(err).splitlines()[0]}") from None
        self.device = device
        self.batch_size = batch_size

    def _load(self, path: Path) -> torch.nn.Module:
        raise NotImplementedError

    def _load_more(self, path: Path) -> None:
        """Load what else the scorer needs, after the model and its image processor."""

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _in_batches(self, items: Sequence[Any], embed: Callable[[list[Any]], torch.Tensor]) -> torch.Tensor:
        """``embed`` over ``items`` in batches of ``batch_size``, as one normalised ``[N, D]``."""
        chunks = [
            embed(list(items[start : start + self.batch_size])).float().cpu()
            for start in range(0, len(items), self.batch_size)
        ]
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.no_grad()
    def image_embeddings(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[N, D]`` normalised image embeddings."""

        def embed(batch: list[Image.Image]) -> torch.Tensor:
            rgb = [img.convert("RGB") for img in batch]
            pixels = self.processor(images=rgb, return_tensors="pt")["pixel_values"].to(self.device)
            return self._image_features(pixels)

        return self._in_batches(images, embed)


class ClipScorer(_ImageEmbedder):
    """CLIP image and text embeddings (L2-normalised) from a model directory.

    Args:
        path: Directory with the model, its image processor and tokenizer.
        device: Torch device.
        batch_size: Images or texts per forward pass.

    Raises:
        ModelError: When the directory is not a loadable CLIP model.
    """

    what = label = "CLIP"

    def __init__(self, path: str | os.PathLike[str], device: str = "cpu", batch_size: int = 16) -> None:
        super().__init__(path, device, batch_size)
        self.max_text_len = int(self.model.config.text_config.max_position_embeddings)

    def _load(self, path: Path) -> torch.nn.Module:
        from transformers import CLIPConfig, CLIPModel

        from worldboot.models.folder import load_weights, read_config

        return load_weights(CLIPModel, path, read_config(path, CLIPConfig), what="CLIP")

    def _load_more(self, path: Path) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(path)

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    @torch.no_grad()
    def text_embeddings(self, texts: Sequence[str]) -> torch.Tensor:
        """``[N, D]`` normalised text embeddings (texts truncated to the model's length)."""

        def embed(batch: list[str]) -> torch.Tensor:
            enc = self.tokenizer(
                batch, padding=True, truncation=True, max_length=self.max_text_len, return_tensors="pt"
            ).to(self.device)
            return _features(
                self.model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            )

        return self._in_batches(texts, embed)


class DinoScorer(_ImageEmbedder):
    """DINOv2 CLS embeddings (L2-normalised) from a model directory: the final layer-normed
    CLS token.

    Args:
        path: Directory with the ``Dinov2Model`` and its image processor.
        device: Torch device.
        batch_size: Images per forward pass.

    Raises:
        ModelError: When the directory is not a loadable DINOv2 model.
    """

    what, label = "DINO", "DINOv2"

    def _load(self, path: Path) -> torch.nn.Module:
        from transformers import Dinov2Config, Dinov2Model

        from worldboot.models.folder import load_weights, read_config

        return load_weights(Dinov2Model, path, read_config(path, Dinov2Config), what="DINOv2")

    def _image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixels).last_hidden_state[:, 0]
