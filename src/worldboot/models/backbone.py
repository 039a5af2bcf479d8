"""The Protocol every backbone implements, and the data it exchanges.

A backbone is a token-based multimodal model with a VQ image tokenizer. The rest of
worldboot (data cache, training, mining, prediction, probing) talks to it only through
:class:`Backbone`, so a second family (Janus, Liquid) is one new module.

Images travel as **codes**: codebook ids ``0..K-1`` of shape ``[L]`` per image. The backbone
maps them to its vocabulary when it builds sequences.

Sequence layouts (labels on the completion only, ``-100`` elsewhere):

* world (CWM, p(o_t | o_s, a)): ``<s> world_before(a) [boi] o_s [eoi] world_prompt(a) [boi] | o_t``
  — the completion is the ``L`` target image tokens. By default ``world_before`` is empty and the
  action follows the source image, as in image editing; the procedural world's tiny base puts
  the action first so that the two images are adjacent (see :class:`PromptTemplates`).
* dynamics (CDM, p(a | o_s, o_t)): ``<s> [boi] o_s [eoi] [boi] o_t [eoi] dynamics_prompt | a </s>``
  — the completion is the action text and the end-of-sequence token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from PIL import Image

from worldboot.errors import DataError


@dataclass
class EncodedImages:
    """VQ codes and pre-quantisation features of a batch of images.

    Attributes:
        codes: ``[B, L]`` codebook ids.
        features: ``[B, L, D]`` features before quantisation (for the paper's Eq. 2).
    """

    codes: torch.Tensor
    features: torch.Tensor


@dataclass
class Example:
    """One token sequence with its labels.

    Attributes:
        input_ids: Token ids of the whole sequence (prompt, then completion if any).
        labels: Same length; the token id where the loss applies, ``-100`` elsewhere.
        completion_start: Index of the first completion token (== len(input_ids) for a prompt).
    """

    input_ids: list[int]
    labels: list[int]
    completion_start: int

    @property
    def is_prompt(self) -> bool:
        """True when the example has no completion (it is ready for generation)."""
        return self.completion_start >= len(self.input_ids)


@dataclass
class Batch:
    """Right-padded tensors for scoring or training.

    Attributes:
        input_ids: ``[B, T]``.
        attention_mask: ``[B, T]``, 1 on real tokens.
        labels: ``[B, T]``, ``-100`` on prompt and padding.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device | str) -> Batch:
        """The batch on ``device``."""
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device))


@dataclass
class Scores:
    """Log-probability of each sample's completion.

    Attributes:
        total: ``[B]`` sum of log p over completion tokens.
        mean: ``[B]`` mean log p per completion token.
        count: ``[B]`` number of completion tokens.
    """

    total: torch.Tensor
    mean: torch.Tensor
    count: torch.Tensor


@dataclass
class SamplingConfig:
    """How to sample tokens.

    Attributes:
        temperature: Softmax temperature; 0 means greedy (argmax).
        top_k: Keep the k most likely tokens (0 = off).
        top_p: Nucleus sampling mass (1.0 = off).
        guidance_scale: Classifier-free guidance for images (1.0 = off); the unconditional
            prompt drops the action text.
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    guidance_scale: float = 1.0


@dataclass
class PromptTemplates:
    """The text around the images in the two layouts.

    Attributes:
        world: Text between source image and target image; ``{action}`` is replaced.
        world_before: Text before the source image in the world layout; ``{action}`` is
            replaced. Empty by default. A small model copies the source's tokens into the
            target far more readily when nothing stands between the two images, because it
            then learns copying at one fixed offset (the embedded world base, which saw images
            shown twice in a row in pre-training, uses ``world_before=" Action: {action}."``
            and ``world=""``).
        dynamics: Text after the two images, before the action.
    """

    world: str = " Action: {action}. Next observation:"
    world_before: str = ""
    dynamics: str = " What happened between the two observations?"
    action_prefix: str = " "
    extra: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class Backbone(Protocol):
    """What worldboot needs from a token-based multimodal model."""

    #: Short name of the family (e.g. ``"chameleon"``).
    family: str
    #: Image side in pixels that the tokenizer takes (the longer side when not square).
    image_size: int
    #: Rows and columns of an image's code grid (``L = rows * columns``).
    grid_hw: tuple[int, int]
    #: Number of tokens ``L`` per image.
    image_seq_len: int
    #: Number of codebook entries ``K``.
    codebook_size: int

    @property
    def device(self) -> torch.device:
        """Where the model's weights are."""
        ...

    @property
    def image_shape(self) -> tuple[int, int]:
        """Height and width in pixels of the images the tokenizer takes."""
        ...

    def tokenizer_fingerprint(self) -> str:
        """A hash of the text vocabulary and image-token mapping: two backbones whose
        fingerprints differ cannot share codes or score each other's sequences."""
        ...

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images to the tokenizer's pixel tensor ``[B, 3, H, W]`` in [-1, 1]."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> EncodedImages:
        """Images to VQ codes and pre-quantisation features."""
        ...

    def decode_codes(self, codes: torch.Tensor) -> list[Image.Image]:
        """Codes ``[B, L]`` to PIL images."""
        ...

    def world_example(
        self, source: torch.Tensor, action: str, target: torch.Tensor | None = None
    ) -> Example:
        """The world layout; without ``target`` a prompt ending in begin-image."""
        ...

    def dynamics_example(
        self, source: torch.Tensor, target: torch.Tensor, action: str | None = None
    ) -> Example:
        """The dynamics layout; without ``action`` a prompt for text generation."""
        ...

    def collate(self, examples: Sequence[Example]) -> Batch:
        """Right-pad examples into a batch."""
        ...

    def score(self, examples: Sequence[Example], batch_size: int = 8) -> Scores:
        """Log-probabilities of each example's completion, padding-safe."""
        ...

    def image_vocab(self) -> slice | torch.Tensor:
        """The vocabulary ids of the image tokens, column ``k`` being code ``k`` (a slice when
        they are contiguous): what a sampler or a policy gradient restricts the logits to."""
        ...

    def score_shared_prefix(self, examples: Sequence[Example]) -> Scores:
        """:meth:`score` of one batch whose examples start alike (a verifier's candidates):
        the common prefix may be run once."""
        ...

    def generate_images(
        self,
        prompts: Sequence[Example],
        num_samples: int = 1,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        uncond_prompts: Sequence[Example] | None = None,
    ) -> torch.Tensor:
        """Exactly ``L`` image codes per sample: ``[len(prompts), num_samples, L]``.

        ``generator`` is one generator, or one per prompt (each prompt's samples then do not
        depend on the rest of the batch)."""
        ...

    def generate_text(
        self,
        prompts: Sequence[Example],
        max_new_tokens: int = 32,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Text completions of each prompt, image tokens excluded."""
        ...


def sequence_problem(backbone: Backbone, action: str) -> str | None:
    """Why a triplet with this action makes a sequence the backbone has no positions for (in
    the world or the dynamics layout), or None. Backbones refuse such an example with a
    :class:`~worldboot.errors.DataError` as they build it; stages that read many triplets ask
    here first, to skip and count the one instead of failing its batch."""
    blank = torch.zeros(backbone.image_seq_len, dtype=torch.long)
    try:
        backbone.world_example(blank, action, blank)
        backbone.dynamics_example(blank, blank, action)
    except DataError as err:
        return str(err)
    return None
