"""What every backbone whose language model reads and writes VQ codes as vocabulary tokens shares.

A :class:`TokenLMBackbone` is a causal language model, a text tokenizer, a VQ tokenizer
(:class:`~worldboot.models.vq.VQGAN`) and the vocabulary id of each code: from that it builds
the two layouts, scores completions, and samples text and images
(:mod:`worldboot.models.sampling`). A family (:mod:`worldboot.models.chameleon`,
:mod:`worldboot.models.causal_vq`) says where those parts come from and how its directory is
saved.

The language model must take ``logits_mask``, ``logits_vocab`` and ``cache`` in its forward:
:func:`~worldboot.models.lm_forward.world_forward` adds them to any transformers causal LM
(:func:`~worldboot.models.lm_forward.world_class`).

(Over 400 lines because the class is the whole Backbone Protocol but for loading and saving: the
image layout, scoring and the decoding steps all read its token ids and model.)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedTokenizerBase

from worldboot.errors import DataError, ModelError
from worldboot.images import to_rgb
from worldboot.models.backbone import (
    Batch,
    EncodedImages,
    Example,
    PromptTemplates,
    SamplingConfig,
    Scores,
)
from worldboot.models.lm_forward import IGNORE_INDEX, completion_positions, unwrap
from worldboot.models.sampling import sample_image_codes, sample_text
from worldboot.models.vq import VQGAN


class TokenLMBackbone:
    """A causal LM that reads and writes VQ codes as tokens, as a
    :class:`~worldboot.models.backbone.Backbone`.

    Args:
        model: The language model (with :func:`~worldboot.models.lm_forward.world_forward`), or a peft/DDP wrapper of it.
        tokenizer: The text tokenizer.
        vqgan: The image tokenizer (encoder, quantizer, decoder).
        code_to_token: ``[K]`` vocabulary id of each code.
        boi_token: The begin-image token; ``eoi_token``: the end-image token.
        image_size: Side of the square image the VQ encoder takes.
        templates: Prompt text of the two layouts.
    """

    family = "token-lm"

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: PreTrainedTokenizerBase,
        vqgan: VQGAN,
        code_to_token: torch.Tensor,
        boi_token: str,
        eoi_token: str,
        image_size: int,
        templates: PromptTemplates | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.templates = templates or PromptTemplates()
        self.vqgan = vqgan
        self.image_size = image_size
        self.codebook_size = int(vqgan.codebook_size)
        #: Rows and columns of an image's code grid.
        self.grid_hw: tuple[int, int] = tuple(vqgan.grid_hw)
        self.image_seq_len = self.grid_hw[0] * self.grid_hw[1]
        if len(code_to_token) != self.codebook_size:
            raise ModelError(f"{len(code_to_token)} image token ids for {self.codebook_size} codes")
        #: ``[K]`` vocabulary id of each code.
        self.code_to_token = torch.as_tensor(code_to_token, dtype=torch.long)
        self.boi_id = self._special(boi_token)
        self.eoi_id = self._special(eoi_token)
        self.bos_id = tokenizer.bos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.bos_id is None or self.eos_id is None:
            raise ModelError("tokenizer needs bos and eos tokens")
        vocab = int(getattr(self.core.config.get_text_config(), "vocab_size", 0) or 0)
        if vocab and int(self.code_to_token.max()) >= vocab:
            raise ModelError(f"image token ids reach {int(self.code_to_token.max())}, past the model's {vocab}")

    # -- identity ---------------------------------------------------------------------------

    def _special(self, token: str) -> int:
        tid = self.tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == self.tokenizer.unk_token_id:
            raise ModelError(f"tokenizer has no special token {token!r}")
        return int(tid)

    @property
    def core(self) -> Any:
        """The transformers model under any wrapper."""
        return unwrap(self.model)

    @property
    def device(self) -> torch.device:
        return next(self.core.parameters()).device

    def tokenizer_fingerprint(self) -> str:
        """Hash of the vocabulary, image mapping, specials and image geometry."""
        h = hashlib.sha256()
        vocab = sorted(self.tokenizer.get_vocab().items(), key=lambda kv: kv[1])
        h.update(json.dumps(vocab).encode())
        h.update(self.code_to_token.numpy().tobytes())
        height, width = self.image_shape
        shape = self.image_size if height == width else f"{height}x{width}"
        h.update(f"{self.boi_id},{self.eoi_id},{self.bos_id},{self.eos_id},{shape}".encode())
        if self.row_end_id is not None:  # a layout with row ends reads codes differently
            h.update(json.dumps(self.layout_ids()).encode())
        return h.hexdigest()[:16]

    # -- images -----------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int, int]:
        """Height and width in pixels of the images the tokenizer takes (square here)."""
        return self.image_size, self.image_size

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Scaled to cover :attr:`image_shape` (LANCZOS), centre crop, scale to [-1, 1], as Anole
        does (for a square shape: the short side to ``image_size``)."""
        height, width = self.image_shape
        arrays = []
        for img in images:
            img = to_rgb(img)  # transparency over white, as Anole's reference
            scale = max(width / img.width, height / img.height)
            new = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
            if new != img.size:
                img = img.resize(new, Image.LANCZOS)
            x0, y0 = (img.width - width) // 2, (img.height - height) // 2
            img = img.crop((x0, y0, x0 + width, y0 + height))
            # Anole's reference arithmetic: float64 x / 255 * 2 - 1, then float32 (x / 127.5 - 1
            # in float32 differs by one ulp on up to 573k values of a 512-px image and flips codes).
            arrays.append((np.asarray(img, dtype=np.float64) / 255.0 * 2.0 - 1.0).astype(np.float32))
        pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
        return pixels.to(self.device, dtype=self.vqgan.dtype)

    @torch.no_grad()
    def encode_images(self, images: Sequence[Image.Image]) -> EncodedImages:
        codes, features = self.vqgan.encode(self.preprocess(images))
        return EncodedImages(codes=codes.cpu(), features=features.float().cpu())

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> list[Image.Image]:
        codes = torch.as_tensor(codes, dtype=torch.long)
        if codes.dim() == 1:
            codes = codes.unsqueeze(0)
        if codes.shape[-1] != self.image_seq_len:
            raise ValueError(f"expected {self.image_seq_len} codes per image, got {codes.shape[-1]}")
        if int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size:
            raise ValueError("codes outside the codebook")
        pixels = self.vqgan.decode(codes.to(self.device))
        arr = ((pixels.float().cpu() + 1.0) * 127.5).round().clamp(0, 255).byte()
        return [Image.fromarray(a.permute(1, 2, 0).numpy(), "RGB") for a in arr]

    # -- sequences --------------------------------------------------------------------------

    def _text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    #: The token after each row of codes (Emu3's end-of-line), or None: a layout token, never a
    #: label, forced in place when an image is sampled.
    row_end_id: int | None = None

    def image_open(self) -> list[int]:
        """The tokens before an image's codes (begin-image): an image prompt ends with them."""
        return [self.boi_id]

    def image_close(self) -> list[int]:
        """The tokens after an image's codes (end-image)."""
        return [self.eoi_id]

    def layout_ids(self) -> list[int]:
        """Every token of the image layout that is not a code (text never draws them)."""
        extra = [] if self.row_end_id is None else [self.row_end_id]
        return sorted({*self.image_open(), *self.image_close(), *extra})

    @property
    def image_body_len(self) -> int:
        """Tokens of an image's codes in a sequence: ``L``, plus one a row with row ends."""
        return self.image_seq_len + (0 if self.row_end_id is None else self.grid_hw[0])

    def _image_body(self, codes: torch.Tensor) -> tuple[list[int], list[int]]:
        """The tokens of an image's codes in raster order, and their labels (``-100`` on the
        row ends, which are layout, not predictions)."""
        codes = torch.as_tensor(codes, dtype=torch.long).flatten()
        if codes.numel() != self.image_seq_len:
            raise ValueError(f"expected {self.image_seq_len} codes, got {codes.numel()}")
        tokens = self.code_to_token[codes.cpu()].tolist()
        if self.row_end_id is None:
            return tokens, list(tokens)
        cols = self.grid_hw[1]
        ids: list[int] = []
        labels: list[int] = []
        for start in range(0, len(tokens), cols):
            ids += [*tokens[start : start + cols], self.row_end_id]
            labels += [*tokens[start : start + cols], IGNORE_INDEX]
        return ids, labels

    def _image(self, codes: torch.Tensor) -> list[int]:
        return [*self.image_open(), *self._image_body(codes)[0], *self.image_close()]

    @property
    def max_positions(self) -> int:
        """The longest sequence the model takes (``max_position_embeddings``)."""
        return int(self.core.config.get_text_config().max_position_embeddings)

    def _fits(self, n_tokens: int, action: str | None) -> None:
        """Refuse a sequence the model has no positions for (a long action text would otherwise
        ask for gigabytes, or fail deep inside attention)."""
        if n_tokens > self.max_positions:
            what = f" (an action of {len(action)} characters)" if action else ""
            raise DataError(
                f"a sequence of {n_tokens} tokens does not fit the model's {self.max_positions} positions{what}"
            )

    def world_example(self, source: torch.Tensor, action: str, target: torch.Tensor | None = None) -> Example:
        before = self._text(self.templates.world_before.format(action=action))
        between = self._text(self.templates.world.format(action=action))
        prompt = [self.bos_id, *before, *self._image(source), *between, *self.image_open()]
        self._fits(len(prompt) + self.image_body_len, action)  # the target's tokens follow
        if target is None:
            return Example(prompt, [IGNORE_INDEX] * len(prompt), len(prompt))
        completion, labels = self._image_body(target)
        return Example(prompt + completion, [IGNORE_INDEX] * len(prompt) + labels, len(prompt))

    def world_uncond_example(self, source: torch.Tensor) -> Example:
        """The world prompt with the action removed: the unconditional branch of guidance."""
        return self.world_example(source, "")

    def dynamics_example(self, source: torch.Tensor, target: torch.Tensor, action: str | None = None) -> Example:
        prompt = [self.bos_id, *self._image(source), *self._image(target), *self._text(self.templates.dynamics)]
        if action is None:
            return Example(prompt, [IGNORE_INDEX] * len(prompt), len(prompt))
        completion = [*self._text(self.templates.action_prefix + action.strip()), self.eos_id]
        self._fits(len(prompt) + len(completion), action)
        return Example(prompt + completion, [IGNORE_INDEX] * len(prompt) + completion, len(prompt))

    def text_example(self, image: torch.Tensor, prompt: str, completion: str | None = None) -> Example:
        """``<s> [boi] image [eoi] prompt | completion``: text about one image (a
        :class:`~worldboot.errors.DataError` when it does not fit the model's positions).

        Used to score multiple-choice answers (each choice is a completion, no end-of-sequence
        token, as lm-eval-harness does); without ``completion`` a prompt for generation.
        """
        ids = [self.bos_id, *self._image(image), *self._text(prompt)]
        if completion is None:
            self._fits(len(ids), None)
            return Example(ids, [IGNORE_INDEX] * len(ids), len(ids))
        tail = self._text(completion)
        self._fits(len(ids) + len(tail), None)
        return Example(ids + tail, [IGNORE_INDEX] * len(ids) + tail, len(ids))

    def collate(self, examples: Sequence[Example]) -> Batch:
        width = max(len(e.input_ids) for e in examples)
        n = len(examples)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(examples):
            k = len(e.input_ids)
            ids[i, :k] = torch.tensor(e.input_ids)
            mask[i, :k] = 1
            labels[i, :k] = torch.tensor(e.labels)
        return Batch(ids, mask, labels)

    def _left_pad(self, examples: Sequence[Example]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(e.input_ids) for e in examples)
        ids = torch.full((len(examples), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            k = len(e.input_ids)
            ids[i, width - k :] = torch.tensor(e.input_ids)
            mask[i, width - k :] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- scoring ----------------------------------------------------------------------------

    def completion_logprobs(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token log p of each completion token, through the (possibly wrapped) model.

        Returns:
            ``(logprobs [N], logits [N, V], sample_index [N])`` in row-major token order.
        """
        batch = batch.to(self.device)
        logits_mask, targets, rows = completion_positions(batch.labels)
        out = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, logits_mask=logits_mask)
        logits = out.logits.float()
        logp = torch.log_softmax(logits, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1)
        return logp, logits, rows

    @torch.no_grad()
    def score(self, examples: Sequence[Example], batch_size: int = 8) -> Scores:
        totals, counts = [], []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(examples), batch_size):
                chunk = examples[start : start + batch_size]
                logp, _, rows = self.completion_logprobs(self.collate(chunk))
                n = len(chunk)
                totals.append(torch.zeros(n).index_add_(0, rows.cpu(), logp.cpu()))
                counts.append(torch.bincount(rows.cpu(), minlength=n))
        finally:
            self.model.train(was_training)
        total = torch.cat(totals) if totals else torch.zeros(0)
        count = torch.cat(counts) if counts else torch.zeros(0, dtype=torch.long)
        return Scores(total=total, mean=total / count.clamp(min=1), count=count)

    @torch.no_grad()
    def score_shared_prefix(self, examples: Sequence[Example]) -> Scores:
        """:meth:`score` in one batch, running the tokens all examples start with only once.

        A verifier scores N candidates that share ``<s>`` and the source image: the shared
        prefix is run for one row and its KV cache repeated N times, then the rest of every
        example runs on top of it. Falls back to :meth:`score` when there is nothing to share.
        """
        if len(examples) < 2:
            return self.score(examples, batch_size=max(1, len(examples)))
        first = examples[0].input_ids
        # The last prompt token predicts the first completion token: it must be in every tail.
        shared = min(e.completion_start for e in examples) - 1
        for e in examples[1:]:
            k = 0
            limit = min(shared, len(e.input_ids))
            while k < limit and e.input_ids[k] == first[k]:
                k += 1
            shared = k
        if shared < 2:
            return self.score(examples, batch_size=len(examples))
        n = len(examples)
        tails = [Example(e.input_ids[shared:], e.labels[shared:], e.completion_start - shared) for e in examples]
        batch = self.collate(tails).to(self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            prefix = torch.tensor([first[:shared]], device=self.device)
            cache = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
            cache.batch_repeat_interleave(n)
            ones = torch.ones((n, shared), dtype=torch.long, device=self.device)
            mask = torch.cat([ones, batch.attention_mask], 1)
            pos = torch.arange(shared, shared + batch.input_ids.shape[1], device=self.device).expand(n, -1)
            logits_mask, targets, rows = completion_positions(batch.labels)
            out = self.model(
                input_ids=batch.input_ids,
                attention_mask=mask,
                position_ids=pos,
                cache=cache,
                logits_mask=logits_mask,
            )
        finally:
            self.model.train(was_training)
        logp = torch.log_softmax(out.logits.float(), dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1).cpu()
        total = torch.zeros(n).index_add_(0, rows.cpu(), logp)
        count = torch.bincount(rows.cpu(), minlength=n)
        return Scores(total=total, mean=total / count.clamp(min=1), count=count)

    # -- generation -------------------------------------------------------------------------

    def _prefill(
        self, examples: Sequence[Example], vocab: slice | torch.Tensor | None = None
    ) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = self._left_pad(examples)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        extra = {} if vocab is None else {"logits_vocab": vocab}
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1, **extra
        )
        return out.cache, out.logits[:, -1].float(), mask, pos[:, -1]

    def _step(
        self,
        cache: Any,
        tokens: torch.Tensor,
        mask: torch.Tensor,
        last_pos: torch.Tensor,
        vocab: slice | torch.Tensor | None = None,
    ):
        tokens = tokens.unsqueeze(1) if tokens.dim() == 1 else tokens  # [B] or [B, k] new tokens
        k = tokens.shape[1]
        mask = torch.cat([mask, torch.ones_like(mask[:, :1]).expand(-1, k)], dim=1)
        positions = last_pos.unsqueeze(1) + torch.arange(1, k + 1, device=last_pos.device)
        last_pos = last_pos + k
        extra = {} if vocab is None else {"logits_vocab": vocab}
        out = self.model(
            input_ids=tokens,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            **extra,
        )
        return out.cache, out.logits[:, -1].float(), mask, last_pos

    def image_vocab(self) -> slice | torch.Tensor:
        """The image tokens' vocabulary ids in code order: a slice when contiguous (Anole:
        4..8195), so that the projection onto them is a view of ``lm_head``'s weight, not a copy."""
        ids = self.code_to_token
        start = int(ids[0])
        if torch.equal(ids, torch.arange(start, start + len(ids))):
            return slice(start, start + len(ids))
        return ids.to(self.device)

    def generate_images(
        self,
        prompts: Sequence[Example],
        num_samples: int = 1,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        uncond_prompts: Sequence[Example] | None = None,
    ) -> torch.Tensor:
        """Exactly ``L`` image codes per sample from one prefill per prompt:
        :func:`worldboot.models.sampling.sample_image_codes`.

        Returns:
            ``[len(prompts), num_samples, L]`` codebook ids on the CPU.
        """
        return sample_image_codes(self, prompts, num_samples, sampling, generator, uncond_prompts)

    def generate_text(
        self,
        prompts: Sequence[Example],
        max_new_tokens: int = 32,
        sampling: SamplingConfig | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """Text after each prompt until end-of-sequence, no image tokens:
        :func:`worldboot.models.sampling.sample_text`."""
        return sample_text(self, prompts, max_new_tokens, sampling, generator)

