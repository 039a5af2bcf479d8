"""The prediction of one batch: per-sample seeds, N candidates from one prefill per prompt, and the verifier's pick (the library call under ``worldboot generate``, the demo, rollouts and the web app's /play)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from PIL import Image

from worldboot.bounds import seed_field
from worldboot.errors import ConfigError
from worldboot.infer.verify import CandidateScores, Verifier
from worldboot.models.backbone import SamplingConfig

# -- configs -------------------------------------------------------------------------------------


@dataclass
class VerifierSettings:
    """The dynamics model (CDM) that picks among candidates.

    Attributes:
        path: CDM model directory (a base model, a trained run or an adapter); None: no verifier.
        score: Rank by ``total`` log p(action | source, candidate) (the paper) or its ``mean``
            per token.
        on_mismatch: When the CDM's image tokenizer differs from the world model's:
            ``reencode`` the decoded candidates with the CDM's tokenizer, or ``error``.
    """

    path: str | None = None
    score: Literal["total", "mean"] = "total"
    on_mismatch: Literal["reencode", "error"] = "reencode"


@dataclass
class PredictConfig:
    """Settings shared by ``worldboot generate`` and ``worldboot rollout`` (and their presets).

    Attributes:
        world: The world model (CWM) directory.
        best_of: N, candidates sampled per sample from one prefill.
        verifier: The CDM that ranks the N candidates.
        sampling: Temperature (the paper: 1; lower values copy the source), top-k, top-p and
            classifier-free guidance (``guidance_scale`` > 1 mixes in the prompt without action).
        seed: The run seed; each sample's seed derives from it and the sample id.
        dtype: Model dtype (``bfloat16`` on GPUs); float32 when None.
        device: ``cpu``, ``cuda``, ``cuda:1``...; default: the process's accelerate device or CPU.
    """

    world: str | None = None
    best_of: int = 1
    verifier: VerifierSettings = field(default_factory=VerifierSettings)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    seed: int = seed_field(0)
    dtype: str | None = None
    device: str | None = None

    def validate(self) -> None:
        """Raise :class:`ConfigError` on values that cannot work."""
        if not self.world:
            raise ConfigError("no world model: pass --world MODEL_DIR (config: world)")
        if self.best_of < 1:
            raise ConfigError(f"best_of must be at least 1, got {self.best_of}")
        s = self.sampling
        if s.temperature < 0:
            raise ConfigError(f"sampling.temperature must be >= 0, got {s.temperature}")
        if s.top_k < 0:
            raise ConfigError(f"sampling.top_k must be >= 0 (0 = off), got {s.top_k}")
        if not 0 < s.top_p <= 1:
            raise ConfigError(f"sampling.top_p must be in (0, 1], got {s.top_p}")
        if s.guidance_scale <= 0:
            raise ConfigError(f"sampling.guidance_scale must be > 0 (1 = off), got {s.guidance_scale}")
        if self.best_of > 1 and s.temperature == 0:
            raise ConfigError("best_of > 1 with sampling.temperature=0 gives N identical candidates")


# -- seeds and the prediction of one batch -------------------------------------------------------


def sample_seed(run_seed: int, sample_id: str) -> int:
    """The seed of one sample: a hash of the run seed and the sample id (63 bits).

    The same in every process, batch and run, so a sample's output does not depend on which
    other samples share its batch or its shard.
    """
    digest = hashlib.blake2b(f"{run_seed}\0{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(seed)


@dataclass
class Prediction:
    """The candidates of one (source, action) and the one picked.

    Attributes:
        codes: ``[N, L]`` world-model codes of the candidates.
        images: The N decoded candidates.
        scores: The verifier's scores (None without a verifier).
        chosen: Index of the prediction among the candidates (0 without a verifier).
    """

    codes: torch.Tensor
    images: list[Image.Image]
    scores: CandidateScores | None
    chosen: int

    @property
    def image(self) -> Image.Image:
        """The chosen candidate."""
        return self.images[self.chosen]

    @property
    def chosen_codes(self) -> torch.Tensor:
        """``[L]`` codes of the chosen candidate."""
        return self.codes[self.chosen]


def predict(
    world: Any,
    sources: Sequence[torch.Tensor],
    actions: Sequence[str],
    num_samples: int = 1,
    sampling: SamplingConfig | None = None,
    generators: torch.Generator | Sequence[torch.Generator] | None = None,
    verifier: Verifier | None = None,
    source_images: Sequence[Image.Image] | None = None,
) -> list[Prediction]:
    """Best-of-N next observations for a batch of (source codes, action).

    Each prompt is prefilled once and its KV cache expanded to ``num_samples`` samples; the
    candidates are decoded; with a verifier each prompt's candidates are scored in one batched
    forward and the best is chosen.

    Args:
        world: The world model.
        sources: ``[L]`` codes of each source.
        actions: The action of each source.
        num_samples: N.
        sampling: Sampling settings (``guidance_scale != 1`` adds the unconditional prompts).
        generators: One generator per prompt (batch-independent samples), one for all, or None.
        verifier: Ranks the candidates; None keeps candidate 0.
        source_images: The sources as images (needed by a verifier with another tokenizer).

    Returns:
        One :class:`Prediction` per prompt.
    """
    sampling = sampling or SamplingConfig()
    sources = [torch.as_tensor(s, dtype=torch.long).flatten() for s in sources]
    prompts = [world.world_example(s, a) for s, a in zip(sources, actions, strict=True)]
    uncond = None
    if sampling.guidance_scale != 1.0:
        make = getattr(world, "world_uncond_example", None)
        uncond = [make(s) if make is not None else world.world_example(s, "") for s in sources]
    codes = world.generate_images(prompts, num_samples, sampling, generators, uncond)
    out = []
    for p, cands in enumerate(codes):
        # Decoding per prompt keeps the decoder's memory at N images (512-px ones for Anole).
        images = world.decode_codes(cands)
        scores, chosen = None, 0
        if verifier is not None:
            src_img = source_images[p] if source_images is not None else None
            scores = verifier.score_candidates(sources[p], cands, actions[p], src_img, images)
            chosen = verifier.choose(scores)
        out.append(Prediction(cands, images, scores, chosen))
    return out


def load_models(
    cfg: PredictConfig,
    device: torch.device | None = None,
    world: Any | None = None,
    verifier: Verifier | None = None,
) -> tuple[Any, Verifier | None]:
    """The world model and the verifier of a config; only those not given are loaded.

    Args:
        cfg: Its ``world``, ``verifier``, ``dtype`` and ``device`` are used.
        device: The process's device under accelerate, used when ``cfg.device`` is not set.
        world: An already loaded world model.
        verifier: An already loaded verifier (None and no ``cfg.verifier.path``: none).
    """
    from worldboot.models import load_backbone

    kwargs: dict[str, Any] = {}
    if cfg.dtype:
        kwargs["dtype"] = cfg.dtype
    target = cfg.device or (str(device) if device is not None and device.type != "cpu" else None)
    if target and target != "cpu":
        kwargs["device_map"] = target
    if world is None:
        world = load_backbone(cfg.world, **kwargs)
    if verifier is None and cfg.verifier.path:
        verifier = Verifier.load(cfg.verifier.path, world, cfg.verifier.score, cfg.verifier.on_mismatch, **kwargs)
    return world, verifier
