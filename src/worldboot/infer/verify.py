"""The dynamics model (CDM) as a verifier of the world model's candidates (paper, section 3.3).

The world model samples N candidate next observations; the CDM scores each one as
``log p(action | source, candidate)`` and the argmax is the prediction:

    ô_t = argmax_i p_CDM(a | o_s, o_t^(i)),   o_t^(i) ~ p_CWM(o_t | o_s, a)

All N candidates of one sample are scored in one batched forward, on top of the source image's
KV cache, computed once for all of them.

**A verifier with another image tokenizer.** The CDM reads image *codes*. When its
:meth:`~worldboot.models.backbone.Backbone.tokenizer_fingerprint` differs from the world
model's (another VQ model, image size or vocabulary), the world model's codes mean nothing to
it. worldboot then re-encodes the decoded candidates and the source image with the verifier's
own tokenizer (``on_mismatch="reencode"``, the default: it costs one VQ encoding per image, and
the prediction records ``verifier_reencoded``), or refuses with a one-line
:class:`~worldboot.errors.ModelError` (``on_mismatch="error"``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image

from worldboot.errors import ModelError

#: How candidates are compared: the sum of log p over the action's tokens, or its mean per token.
SCORE_KINDS = ("total", "mean")
#: What to do when the verifier's tokenizer differs from the world model's.
ON_MISMATCH = ("reencode", "error")


@dataclass
class CandidateScores:
    """The verifier's view of the N candidates of one sample.

    Attributes:
        total: ``[N]`` log p(action | source, candidate), summed over the action's tokens.
        mean: ``[N]`` the same per token.
        source_codes: ``[L']`` the source codes the verifier read.
        candidate_codes: ``[N, L']`` the candidate codes the verifier read (the world model's
            own codes unless re-encoded).
        reencoded: True when the codes were re-encoded with the verifier's tokenizer.
    """

    total: torch.Tensor
    mean: torch.Tensor
    source_codes: torch.Tensor
    candidate_codes: torch.Tensor
    reencoded: bool

    def get(self, kind: str) -> torch.Tensor:
        """``total`` or ``mean``."""
        return self.total if kind == "total" else self.mean


def argmax_index(values: torch.Tensor) -> int:
    """Index of the largest value; NaN counts as the lowest, the first wins ties."""
    values = torch.nan_to_num(values.float(), nan=float("-inf"))
    return int(torch.argmax(values))


class Verifier:
    """A dynamics model (CDM) that scores and ranks world-model candidates.

    Args:
        backbone: The CDM, a :class:`~worldboot.models.backbone.Backbone`.
        world: The world model whose codes will be scored (its tokenizer is compared).
        score: ``"total"`` (default, the paper's likelihood) or ``"mean"`` (per token, which
            does not favour actions that tokenise short; all candidates share the action, so
            the two rank them the same unless the verifier re-tokenises differently).
        on_mismatch: ``"reencode"`` or ``"error"`` when tokenizers differ (module docstring).
        path: Where the CDM was loaded from, recorded with predictions.

    Raises:
        ModelError: On a tokenizer mismatch with ``on_mismatch="error"``, or bad settings.
    """

    def __init__(
        self,
        backbone: Any,
        world: Any | None = None,
        score: Literal["total", "mean"] = "total",
        on_mismatch: Literal["reencode", "error"] = "reencode",
        path: str | None = None,
    ) -> None:
        if score not in SCORE_KINDS:
            raise ModelError(f"verifier score must be one of {', '.join(SCORE_KINDS)}, got {score!r}")
        if on_mismatch not in ON_MISMATCH:
            raise ModelError(f"verifier on_mismatch must be one of {', '.join(ON_MISMATCH)}, got {on_mismatch!r}")
        self.backbone = backbone
        self.score_kind = score
        self.path = path
        self.reencode = world is not None and backbone.tokenizer_fingerprint() != world.tokenizer_fingerprint()
        if self.reencode and on_mismatch == "error":
            raise ModelError(
                f"the verifier{f' {path}' if path else ''} has another image tokenizer than the world model "
                f"(fingerprint {backbone.tokenizer_fingerprint()} vs {world.tokenizer_fingerprint()}): it cannot "
                "score the world model's codes (worldboot generate re-encodes the candidates with "
                "verifier.on_mismatch=reencode; reward training needs one tokenizer)"
            )

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        world: Any | None = None,
        score: Literal["total", "mean"] = "total",
        on_mismatch: Literal["reencode", "error"] = "reencode",
        **load_kwargs: Any,
    ) -> Verifier:
        """Open a CDM directory (base model, trained run or adapter) as a verifier."""
        from worldboot.models import load_backbone

        return cls(load_backbone(path, **load_kwargs), world, score, on_mismatch, path=str(path))

    def score_candidates(
        self,
        source_codes: torch.Tensor,
        candidate_codes: torch.Tensor,
        action: str,
        source_image: Image.Image | None = None,
        candidate_images: Sequence[Image.Image] | None = None,
    ) -> CandidateScores:
        """log p(action | source, candidate) of each candidate, in one batched forward.

        Args:
            source_codes: ``[L]`` world-model codes of the source.
            candidate_codes: ``[N, L]`` world-model codes of the candidates.
            action: The action text.
            source_image: The source as an image; needed when re-encoding.
            candidate_images: The decoded candidates; needed when re-encoding.

        Returns:
            The scores and the codes they were computed from.
        """
        candidate_codes = torch.as_tensor(candidate_codes)
        if candidate_codes.dim() == 1:
            candidate_codes = candidate_codes.unsqueeze(0)
        if self.reencode:
            if source_image is None or candidate_images is None:
                raise ValueError("a verifier with another tokenizer needs the source and candidate images")
            encoded = self.backbone.encode_images([source_image, *candidate_images]).codes
            source_codes, candidate_codes = encoded[0], encoded[1:]
        examples = [self.backbone.dynamics_example(source_codes, c, action) for c in candidate_codes]
        scores = self.backbone.score_shared_prefix(examples)
        return CandidateScores(
            total=scores.total.float(),
            mean=scores.mean.float(),
            source_codes=torch.as_tensor(source_codes).cpu(),
            candidate_codes=candidate_codes.cpu(),
            reencoded=self.reencode,
        )

    def choose(self, scores: CandidateScores) -> int:
        """Index of the best candidate by the configured score."""
        return argmax_index(scores.get(self.score_kind))
