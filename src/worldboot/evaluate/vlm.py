"""Any transformers image-text-to-text model as a dynamics scorer, log p(a | o_s, o_t).

So that VLMs that cannot generate images (Qwen2.5-VL, LLaVA, Idefics...) can be probed in the
dynamics direction beside our backbones, through ``AutoModelForImageTextToText`` and the
model's own processor and chat template: the user turn holds the two images and the question,
the assistant turn the action, whose tokens alone are scored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from worldboot.errors import ModelError

DEFAULT_QUESTION = "The first image shows a scene before an action, the second after it. What action happened?"


class VLMDynamicsScorer:
    """Scores action texts given two images with a transformers VLM.

    Args:
        path: A local model directory with its processor (``AutoProcessor``).
        question: The user's question after the two images.
        dtype: e.g. ``"bfloat16"`` on GPUs.
        device: Where to run (default: CUDA when available).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        question: str = DEFAULT_QUESTION,
        dtype: str | None = None,
        device: str | None = None,
    ) -> None:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        from worldboot.models.folder import load_weights, read_config

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelError(f"VLM directory {path} has no config.json")
        config = read_config(path)  # a config.json of the wrong shape: one line naming it
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            # load_weights refuses weights the config does not fit (a layer more would start at random).
            self.model = load_weights(AutoModelForImageTextToText, path, config, what="VLM",
                                      dtype=getattr(torch, dtype) if dtype else torch.float32)
        except (OSError, ValueError, KeyError) as err:
            raise ModelError(f"cannot load VLM from {path}: {str(err).splitlines()[0]}") from None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device).eval()
        self.tokenizer = self.processor.tokenizer
        self.question = question
        self.name = path.name

    def _prompt(self) -> str:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": self.question}]}
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def score(self, source: Image.Image, target: Image.Image, action: str) -> tuple[float, float, int]:
        """``(total, mean, count)`` of log p over the action's tokens (and end-of-sequence)."""
        enc = self.processor(text=[self._prompt()], images=[[source, target]], return_tensors="pt")
        prompt_ids = enc.pop("input_ids")[0]
        enc.pop("attention_mask", None)
        # The action's ids are appended to the prompt's rather than re-tokenising the joined text,
        # so that the prompt part is exactly what the processor made (image tokens included).
        completion = self.tokenizer(" " + action.strip(), add_special_tokens=False)["input_ids"]
        if self.tokenizer.eos_token_id is not None:
            completion = [*completion, self.tokenizer.eos_token_id]
        ids = torch.cat([prompt_ids, torch.tensor(completion, dtype=prompt_ids.dtype)]).unsqueeze(0)
        inputs = {k: v.to(self.device) for k, v in enc.items() if torch.is_tensor(v)}
        out = self.model(input_ids=ids.to(self.device), attention_mask=torch.ones_like(ids).to(self.device), **inputs)
        n = len(completion)
        logits = out.logits[0, -n - 1 : -1].float()
        logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, -n:].to(self.device).unsqueeze(1)).squeeze(1)
        total = float(logp.sum())
        return total, total / n, n

    def score_many(self, items: Sequence[tuple[Image.Image, Image.Image, str]]) -> list[tuple[float, float, int]]:
        """Score several (source, target, action) items, one forward pass each."""
        return [self.score(s, t, a) for s, t, a in items]
