"""The forward a backbone's language model runs: only the logits asked for (the completion
positions, the image vocabulary), on any transformers causal LM (:func:`world_class`), and where
those positions are (:func:`completion_positions`)."""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

IGNORE_INDEX = -100


def world_forward(
    self: Any,
    input_ids: torch.LongTensor | None = None,
    attention_mask: torch.Tensor | None = None,
    position_ids: torch.LongTensor | None = None,
    cache: Any = None,
    inputs_embeds: torch.Tensor | None = None,
    labels: torch.LongTensor | None = None,
    use_cache: bool | None = None,
    logits_to_keep: int | torch.Tensor = 0,
    logits_mask: torch.Tensor | None = None,
    logits_vocab: slice | torch.Tensor | None = None,
    **kwargs: Any,
) -> CausalLMOutputWithPast:
    """A causal LM's forward that computes only the logits asked for.

    ``logits_mask`` (``[B, T]`` bool): the logits of only those positions, flattened to
    ``[N, V]``; scoring and training need the completion positions only, and for a
    65,536-token vocabulary over 2,000-token sequences that is megabytes instead of gigabytes.
    ``logits_vocab`` (a slice or ``[V']`` ids): only those vocabulary entries; image
    generation draws image tokens only (an eighth of Anole's projection). Chameleon's own
    forward also sets every image-token logit to the lowest float; this one does not.
    """
    outputs = self.model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        cache=cache,
        inputs_embeds=inputs_embeds,
        use_cache=use_cache,
        **kwargs,
    )
    hidden = outputs.last_hidden_state
    hidden = hidden[logits_mask] if logits_mask is not None else slice_logits_to_keep(hidden, logits_to_keep)
    head = self.lm_head
    if logits_vocab is None:
        logits = head(hidden)
    elif type(head) is torch.nn.Linear and head.bias is None:
        logits = torch.nn.functional.linear(hidden, head.weight[logits_vocab])
    else:  # a wrapped head (e.g. LoRA on lm_head) computes everything, then we select
        logits = head(hidden)[..., logits_vocab]
    cap = getattr(self.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    loss = None
    if labels is not None and logits_mask is None:
        loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.get_text_config().vocab_size)
    return CausalLMOutputWithPast(loss=loss, logits=logits, cache=outputs.cache)


_WORLD_CLASSES: dict[type, type] = {}


def world_class(base: type) -> type:
    """``base`` (a transformers ``*ForCausalLM`` with ``.model`` and ``.lm_head``) with
    :func:`world_forward` as its forward; made once per class."""
    if base not in _WORLD_CLASSES:
        _WORLD_CLASSES[base] = type(f"World{base.__name__}", (base,), {"forward": world_forward})
    return _WORLD_CLASSES[base]


def completion_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where a causal LM's logits predict completion tokens.

    Args:
        labels: ``[B, T]`` with ``-100`` outside the completion.

    Returns:
        ``(logits_mask [B, T], targets [N], sample_index [N])``: the logits at position ``t``
        predict ``labels[:, t + 1]``; targets and sample indices are in the row-major order
        in which ``hidden[logits_mask]`` flattens.
    """
    shifted = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    logits_mask = torch.zeros_like(labels, dtype=torch.bool)
    logits_mask[:, :-1] = keep
    rows = torch.arange(labels.shape[0], device=labels.device).unsqueeze(1).expand_as(shifted)
    return logits_mask, shifted[keep], rows[keep]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under peft / DDP wrappers."""
    while True:
        if hasattr(model, "module"):
            model = model.module
        elif hasattr(model, "get_base_model"):
            model = model.get_base_model()
        else:
            return model
