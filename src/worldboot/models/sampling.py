"""Decoding for token-LM backbones (every family): one prefill per prompt, its KV cache
repeated for best-of-N, image tokens only inside an image (exactly ``L`` of them), and the samplers.

Written here rather than through transformers' ``generate`` because it is faster where
best-of-N needs it: ``benchmarks/bench_sampler.py`` runs ``generate`` with
``num_return_sequences=N`` and a logits processor that allows only image tokens for ``L`` steps
and then forces end-image; at N = 8 this loop took 2.29x less time per sample on the tiny
Chameleon, 1.88x less on the tiny causal-vq Gemma and 1.82x less on the tiny Emu3 (docs/results.md):
``generate`` prefills every returned sequence again and projects onto the whole vocabulary at
every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from worldboot.models.backbone import Example, SamplingConfig


def warpers(sampling: SamplingConfig) -> LogitsProcessorList:
    """transformers' temperature, top-k and top-p warpers for ``sampling``."""
    procs = LogitsProcessorList()
    if sampling.temperature > 0 and sampling.temperature != 1.0:
        procs.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k > 0:
        procs.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        procs.append(TopPLogitsWarper(sampling.top_p))
    return procs

def pick(scores: torch.Tensor, sampling: SamplingConfig, procs: LogitsProcessorList, generator: Any) -> torch.Tensor:
    """One token per row: the argmax at temperature 0, else a draw after ``procs``; ``generator`` may be
    one generator, or a list with one per prompt (each drawing for its prompt's consecutive rows)."""
    if sampling.temperature <= 0:
        return scores.argmax(dim=-1)
    scores = procs(None, scores)
    probs = torch.softmax(scores, dim=-1)
    if isinstance(generator, (list, tuple)):
        # One generator per prompt, drawing for that prompt's consecutive rows only: a
        # prompt's samples then do not depend on which other prompts share the batch.
        per = probs.shape[0] // len(generator)
        u = torch.cat([torch.rand(per, 1, generator=g, device=probs.device, dtype=torch.float64) for g in generator])
        return inverse_cdf(probs, u)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)

def inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One draw per row from ``probs`` given uniforms ``u`` ``[B, 1]``: the first index whose
    cumulative mass exceeds ``u`` times the row's total.

    Exact (a zero-probability entry is never picked), and one random number per row instead
    of one per entry as ``torch.multinomial`` draws: with 8 samples of 8,192 codes per step
    that is most of the sampling time.
    """
    cdf = probs.double().cumsum(-1)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(1)
    # u * total can round up to the total: fall back to the last entry with mass.
    last = probs.shape[1] - 1 - (probs.flip(-1) > 0).int().argmax(-1)
    return torch.minimum(idx, last)


class ReservedLayer(DynamicLayer):
    """A KV-cache layer with room reserved for the tokens still to come.

    transformers' ``DynamicLayer`` concatenates every new key and value onto the whole cache,
    so a step copies all of it: at 8 samples x 2 x layers, most of what best-of-N adds to a
    step on a small model. This layer writes each step into a buffer sized once for the
    prompt plus the image and hands attention a view of the filled part (no library cache
    does that: ``StaticLayer`` attends over its whole buffer, padding included). Past the
    reserve it falls back to concatenating.
    """

    @classmethod
    def reserve(cls, layer: DynamicLayer, extra: int) -> ReservedLayer:
        new = cls()
        keys, values = layer.keys, layer.values
        n = keys.shape[-2]
        new.dtype, new.device, new.is_initialized = keys.dtype, keys.device, True
        new._k = keys.new_empty((*keys.shape[:-2], n + extra, keys.shape[-1]))
        new._v = values.new_empty((*values.shape[:-2], n + extra, values.shape[-1]))
        new._k[..., :n, :] = keys
        new._v[..., :n, :] = values
        new._n = n
        new.keys, new.values = new._k[..., :n, :], new._v[..., :n, :]
        return new

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
        end = self._n + key_states.shape[-2]
        if end > self._k.shape[-2]:
            self._k = torch.cat([self.keys, key_states], dim=-2)
            self._v = torch.cat([self.values, value_states], dim=-2)
        else:
            self._k[..., self._n : end, :] = key_states
            self._v[..., self._n : end, :] = value_states
        self._n = end
        self.keys, self.values = self._k[..., :end, :], self._v[..., :end, :]
        return self.keys, self.values


def reserve_cache(cache: Any, extra: int) -> None:
    """Give every plain layer of ``cache`` room for ``extra`` more tokens (see :class:`ReservedLayer`)."""
    layers = getattr(cache, "layers", None)
    if not layers:
        return
    for i, layer in enumerate(layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            layers[i] = ReservedLayer.reserve(layer, extra)


# no_grad rather than inference mode: under DeepSpeed ZeRO-3 the forward gathers the model's
# weights, and weights gathered in inference mode stay inference tensors that a later training
# forward (world-rl samples, then trains) cannot save for backward.
@torch.no_grad()
def sample_image_codes(
    backbone: Any,
    prompts: Sequence[Example],
    num_samples: int = 1,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    uncond_prompts: Sequence[Example] | None = None,
) -> torch.Tensor:
    """Sample exactly ``L`` image codes per sample from one prefill per prompt.

    The prompt batch is prefilled once and its KV cache repeated ``num_samples`` times
    (transformers' ``generate`` would prefill each sample again). Inside the image only
    image tokens may be drawn; the image opening (begin-image) ends the prompt, row ends (Emu3)
    are forced in place and end-image is implied after ``L`` codes, so every sample decodes. With ``guidance_scale != 1`` the unconditional
    prompts run in the same batch and the logits are mixed as in classifier-free guidance.
    ``generator`` may be a list with one generator per prompt: each prompt's samples are
    then drawn from its own generator, whatever else is in the batch.

    Returns:
        ``[len(prompts), num_samples, L]`` codebook ids on the CPU.
    """
    sampling = sampling or SamplingConfig()
    guided = sampling.guidance_scale != 1.0
    if guided and (uncond_prompts is None or len(uncond_prompts) != len(prompts)):
        raise ValueError("guidance needs one unconditional prompt per prompt")
    if isinstance(generator, (list, tuple)) and len(generator) != len(prompts):
        raise ValueError("a list of generators needs one generator per prompt")
    opening = backbone.image_open()
    for p in prompts:
        if not p.is_prompt or p.input_ids[-len(opening):] != opening:
            raise ValueError("image prompts must end with begin-image and have no completion")
    backbone.model.eval()
    n_prompts = len(prompts)
    batch = list(prompts) + (list(uncond_prompts) if guided else [])
    # Logits of the image tokens only: scores[:, k] is the logit of code k.
    vocab = backbone.image_vocab()
    cache, logits, mask, last_pos = backbone._prefill(batch, vocab)
    cache.batch_repeat_interleave(num_samples)
    reserve_cache(cache, backbone.image_body_len)
    logits = logits.repeat_interleave(num_samples, 0)
    mask = mask.repeat_interleave(num_samples, 0)
    last_pos = last_pos.repeat_interleave(num_samples, 0)
    image_ids = backbone.code_to_token.to(backbone.device)
    procs = warpers(sampling)
    rows = n_prompts * num_samples
    codes = torch.empty((rows, backbone.image_seq_len), dtype=torch.long, device=backbone.device)
    # A backbone with row ends (Emu3) gets each one forced after the row's last code, fed in the
    # same forward as that code, so every sample keeps the layout and decodes.
    cols, row_end = backbone.grid_hw[1], backbone.row_end_id
    for step in range(backbone.image_seq_len):
        scores = logits
        if guided:
            cond, uncond = scores[:rows], scores[rows:]
            scores = uncond + sampling.guidance_scale * (cond - uncond)
        code = pick(scores, sampling, procs, generator)
        codes[:, step] = code
        if step + 1 == backbone.image_seq_len:
            break
        token = image_ids[code]
        if row_end is not None and (step + 1) % cols == 0:
            token = torch.stack([token, torch.full_like(token, row_end)], dim=1)
        if guided:
            token = torch.cat([token, token])
        cache, logits, mask, last_pos = backbone._step(cache, token, mask, last_pos, vocab)
    return codes.view(n_prompts, num_samples, -1).cpu()

def banned_text_ids(backbone: Any) -> torch.Tensor:
    """Token ids text decoding never draws: the image tokens, the image layout's and padding
    (end-of-sequence stays allowed). A policy gradient on sampled text masks the same ids."""
    banned = torch.cat([backbone.code_to_token, torch.tensor([*backbone.layout_ids(), backbone.pad_id])])
    return banned[banned != backbone.eos_id]


@torch.no_grad()  # as sample_image_codes
def sample_text_ids(
    backbone: Any,
    prompts: Sequence[Example],
    max_new_tokens: int = 32,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    num_samples: int = 1,
    stop_early: bool = True,
) -> list[list[int]]:
    """Token ids drawn after each prompt until end-of-sequence (included when drawn), at most
    ``max_new_tokens``; never :func:`banned_text_ids`. Greedy when ``sampling.temperature ==
    0`` (the default here). With ``num_samples`` the prompts are prefilled once and their cache
    repeated, as for images; ``generator`` may be one per prompt. ``stop_early=False`` runs all
    ``max_new_tokens`` steps even when every row has ended: under DeepSpeed ZeRO-3 each forward
    gathers the weights from every process, so all must run as many.

    Returns:
        ``len(prompts) * num_samples`` lists, a prompt's samples consecutive.
    """
    sampling = sampling or SamplingConfig(temperature=0.0)
    if isinstance(generator, (list, tuple)) and len(generator) != len(prompts):
        raise ValueError("a list of generators needs one generator per prompt")
    backbone.model.eval()
    cache, logits, mask, last_pos = backbone._prefill(prompts)
    if num_samples > 1:
        cache.batch_repeat_interleave(num_samples)
        logits = logits.repeat_interleave(num_samples, 0)
        mask = mask.repeat_interleave(num_samples, 0)
        last_pos = last_pos.repeat_interleave(num_samples, 0)
    reserve_cache(cache, max_new_tokens)
    banned = banned_text_ids(backbone).to(backbone.device)
    procs = warpers(sampling)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=backbone.device)
    out: list[list[int]] = [[] for _ in range(logits.shape[0])]
    for step in range(max_new_tokens):
        logits[:, banned] = float("-inf")
        token = pick(logits, sampling, procs, generator)
        token = torch.where(done, torch.full_like(token, backbone.eos_id), token)
        for i, t in enumerate(token.tolist()):
            if not done[i]:
                out[i].append(t)
        done |= token == backbone.eos_id
        if step + 1 == max_new_tokens or (stop_early and bool(done.all())):
            break
        cache, logits, mask, last_pos = backbone._step(cache, token, mask, last_pos)
    return out


def sample_text(
    backbone: Any,
    prompts: Sequence[Example],
    max_new_tokens: int = 32,
    sampling: SamplingConfig | None = None,
    generator: torch.Generator | None = None,
) -> list[str]:
    """Decode text after each prompt until end-of-sequence (:func:`sample_text_ids`)."""
    ids = sample_text_ids(backbone, prompts, max_new_tokens, sampling, generator)
    return [backbone.tokenizer.decode([t for t in row if t != backbone.eos_id], skip_special_tokens=True).strip()
            for row in ids]
