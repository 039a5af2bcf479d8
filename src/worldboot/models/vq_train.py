"""Training a Chameleon-architecture VQ tokenizer from scratch (a VQ-VAE, no GAN, no LPIPS).

The model is transformers' ``ChameleonVQVAE`` (encoder, ``quant_conv``, quantizer,
``post_quant_conv``) plus our :class:`~worldboot.models.vq.ChameleonVQDecoder`, so that a
trained tokenizer drops into a Chameleon backbone unchanged. The loss is

* a reconstruction loss: L1 on pixels in [-1, 1], with ``object_weight`` times more weight on
  pixels that differ from the image's background (its median colour). Small synthetic scenes
  are mostly background; without the weight the first hundreds of steps only learn the table;
* the quantizer's own VQ loss (codebook + ``beta`` x commitment, transformers'
  ``ChameleonVQVAEVectorQuantizer``, with its straight-through estimator).

Initialisation: transformers initialises the VQ model like its language model (normal with
std 0.02, meant for frozen, converted checkpoints), which shrinks the signal through every
convolution and leaves a fresh encoder learning very slowly; :func:`reset_conv_init` puts
PyTorch's default initialisation back, as taming's VQGAN is trained from.

Two standard fixes against codebook collapse, written here because transformers' quantizer
has neither and no maintained library offers them for this module:

* **a continuous warm start and k-means initialisation**: for the first ``ae_fraction`` of
  the steps the quantizer is bypassed (a plain autoencoder, which learns much faster than
  through the straight-through estimator), then the codebook is set to k-means centroids of
  encoder outputs (SciPy's ``kmeans2``), so that every code starts where the data is;
* **dead-code restarts** (as in Jukebox and SoundStream): every ``restart_every`` steps the
  codes used fewer than ``restart_threshold`` times (exponential moving count) are moved onto
  random encoder outputs of the current batch, so every code keeps a chance to be used.

**A locality loss** (optional, ``locality_weight``): a world model edits a scene by rewriting the
tokens of what changed and copying the rest, and a dynamics model finds the change by comparing
the two token grids position by position. Both need tokens that stay the same where the image
stays the same. Chameleon's encoder is not local by construction: its GroupNorm layers normalise
every channel over the whole image (on a flat background a channel's variance comes from the
objects alone, so adding one object rescales the features of every background position), and
its middle attention block mixes all positions. Measured on the smoke recipe: an edit of one
cell changed the codes of 38 % of the token positions it did not touch. Given pairs of images
before and after an edit, and a mask of the token positions the edit did not touch, the loss
adds the squared distance of the pre-quantisation features at those positions, divided by the
mean squared feature norm (so shrinking every feature does not lower it). No library offers
this for a VQ model; it is a few lines.

Everything here is model-side and data-agnostic: batches come from callables, so
:mod:`worldboot.foundation.world_base` trains the tokenizer on procedural-world scenes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from worldboot.models.vq import VQGAN, ChameleonVQDecoder
from worldboot.progress import progress_bar


@dataclass
class VQTrainSettings:
    """How the tokenizer is trained.

    Attributes:
        steps: Optimiser steps.
        batch_size: Images per step.
        lr: Peak AdamW learning rate (linear warm-up over 5% of the steps, cosine to 10%).
        beta: Commitment weight of the quantizer's loss (VQ-VAE's 0.25).
        object_weight: Weight of non-background pixels in the reconstruction loss.
        ae_fraction: Share of the steps trained without quantization (continuous warm start).
        kmeans_batches: Batches of encoder outputs clustered to initialise the codebook.
        restart_every: Steps between dead-code restarts (0 = never).
        restart_threshold: Codes with a moving count of uses per step below this are restarted.
        locality_weight: Weight of the locality loss (0 = off; needs ``sample_pairs``).
        pair_batch_size: Image pairs per step for the locality loss.
        seed: Seeds initialisation and restarts.
    """

    steps: int = 400
    batch_size: int = 16
    lr: float = 2e-3
    beta: float = 0.25
    object_weight: float = 5.0
    ae_fraction: float = 0.3
    kmeans_batches: int = 4
    restart_every: int = 20
    restart_threshold: float = 0.03
    locality_weight: float = 0.0
    pair_batch_size: int = 4
    seed: int = 0


def build_vq(config: ChameleonVQVAEConfig | dict[str, Any], seed: int = 0) -> VQGAN:
    """A randomly initialised tokenizer (transformers' VQ model + our decoder) for ``config``."""
    if isinstance(config, dict):
        config = ChameleonVQVAEConfig(**config)
    torch.manual_seed(seed)
    return VQGAN(ChameleonVQVAE(config), ChameleonVQDecoder(config))


def _pre_quant(vqgan: VQGAN, pixels: torch.Tensor) -> torch.Tensor:
    return vqgan.vq.quant_conv(vqgan.vq.encoder(pixels))


def pixel_weights(pixels: torch.Tensor, object_weight: float) -> torch.Tensor:
    """``[B, 1, H, W]`` loss weights: ``object_weight`` where a pixel is not the background.

    The background is each image's per-channel median, which is the table colour for any
    scene whose objects cover less than half of the image.
    """
    if object_weight == 1.0:
        return torch.ones_like(pixels[:, :1])
    bg = pixels.flatten(2).median(dim=2).values[:, :, None, None]
    fg = ((pixels - bg).abs().amax(dim=1, keepdim=True) > 0.1).float()
    return 1.0 + (object_weight - 1.0) * fg


def locality_loss(vqgan: VQGAN, pixels: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """How much the pre-quantisation features move where an edit did not touch the image.

    Args:
        vqgan: The tokenizer.
        pixels: ``[2P, 3, H, W]``: pairs of images, before and after an edit, interleaved.
        keep: ``[P, h, w]`` bool: token positions the edit of each pair did not touch.

    Returns:
        Mean over the kept positions of the squared feature distance, divided by the mean
        squared feature norm of the batch (a detached scale).
    """
    z = _pre_quant(vqgan, pixels)
    dist = (z[0::2] - z[1::2]).pow(2).sum(dim=1)
    scale = z.detach().pow(2).sum(dim=1).mean().clamp(min=1e-6)
    keep = keep.to(dist.dtype)
    return (dist * keep).sum() / keep.sum().clamp(min=1.0) / scale


def reset_conv_init(vqgan: VQGAN) -> None:
    """PyTorch's default initialisation for every convolution, norm and linear layer of the
    tokenizer (the codebook is set later by :func:`init_codebook`); seed torch first."""
    for module in vqgan.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.Linear)):
            module.reset_parameters()


@torch.no_grad()
def init_codebook(
    vqgan: VQGAN, sample_batch: Callable[[int, int], torch.Tensor], s: VQTrainSettings, gen: torch.Generator
) -> None:
    """Set the codebook to k-means centroids of encoder outputs of ``s.kmeans_batches`` batches.

    The batches are drawn with negative step numbers, which no training step uses.
    """
    from scipy.cluster.vq import kmeans2

    quant = vqgan.vq.quantize
    was_training = vqgan.training
    vqgan.eval()
    z = torch.cat(
        [
            _pre_quant(vqgan, sample_batch(-1 - b, s.batch_size)).permute(0, 2, 3, 1).reshape(-1, quant.embedding_dim)
            for b in range(max(1, s.kmeans_batches))
        ]
    )
    vqgan.train(was_training)
    k = quant.num_embeddings
    if z.shape[0] < k:  # fewer vectors than codes: repeat them (noise below separates copies)
        z = z.repeat((k + z.shape[0] - 1) // z.shape[0], 1)
    seed = int(torch.randint(0, 2**31 - 1, (1,), generator=gen))
    centroids, _ = kmeans2(z.double().numpy(), k, iter=10, minit="++", seed=seed)
    centroids = torch.from_numpy(centroids).float()
    quant.embedding.weight.copy_(centroids + 1e-3 * torch.randn(centroids.shape, generator=gen))


def train_vq(
    vqgan: VQGAN,
    sample_batch: Callable[[int, int], torch.Tensor],
    settings: VQTrainSettings | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    sample_pairs: Callable[[int, int], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> dict[str, float]:
    """Train ``vqgan`` in place as a VQ-VAE.

    Args:
        vqgan: The tokenizer (see :func:`build_vq`).
        sample_batch: ``sample_batch(step, batch_size)`` returns pixels ``[B, 3, H, W]`` in
            [-1, 1]; deterministic in ``step`` for a reproducible run.
        settings: Hyper-parameters.
        progress: Show a progress bar (on stderr; ``WORLDBOOT_NO_PROGRESS`` turns it off).
        log: Called with a line of metrics now and then.
        sample_pairs: ``sample_pairs(step, n)`` returns ``n`` image pairs and the token
            positions each edit did not touch (see :func:`locality_loss`); required when
            ``settings.locality_weight`` > 0.

    Returns:
        Final metrics: ``l1`` (mean absolute pixel error of the last batch), ``vq_loss``,
        ``locality`` (the last locality loss, 0 when off), ``codes_used`` (distinct codes in
        the last 20 batches), ``restarts``, ``seconds``.

    Raises:
        ValueError: ``locality_weight`` > 0 without ``sample_pairs``.
    """
    s = settings or VQTrainSettings()
    if s.locality_weight > 0 and sample_pairs is None:
        raise ValueError("locality_weight > 0 needs sample_pairs (image pairs and untouched positions)")
    quant = vqgan.vq.quantize
    quant.beta = s.beta
    k = quant.num_embeddings
    gen = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    reset_conv_init(vqgan)
    vqgan.train()
    params = [p for p in vqgan.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.99), weight_decay=0.0)
    warm = max(1, s.steps // 20)

    def lr_at(step: int) -> float:
        if step < warm:
            return s.lr * (step + 1) / warm
        u = (step - warm) / max(1, s.steps - warm)
        return s.lr * (0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(u * torch.pi)).item()))

    ae_steps = int(round(s.ae_fraction * s.steps))
    usage = torch.ones(k)  # moving count of uses per step
    recent: list[torch.Tensor] = []
    restarts = 0
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    bar = progress_bar("[bold]VQ tokenizer", progress, info=True)
    with bar:
        task = bar.add_task("vq", total=s.steps, info="")
        for step in range(s.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            if step == ae_steps:
                init_codebook(vqgan, sample_batch, s, gen)
                usage.fill_(1.0)
            pixels = sample_batch(step, s.batch_size)
            z = _pre_quant(vqgan, pixels)
            if step < ae_steps:
                zq, vq_loss = z, torch.zeros(())
                idx = torch.zeros(0, dtype=torch.long)
            else:
                zq, vq_loss, idx = quant(z)
            recon = vqgan.decoder(vqgan.vq.post_quant_conv(zq))
            w = pixel_weights(pixels, s.object_weight)
            l1 = ((recon - pixels).abs() * w).sum() / (w.sum() * pixels.shape[1])
            local = torch.zeros(())
            if s.locality_weight > 0 and sample_pairs is not None:
                local = locality_loss(vqgan, *sample_pairs(step, s.pair_batch_size))
            loss = l1 + vq_loss + s.locality_weight * local
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                counts = torch.bincount(idx, minlength=k).float()
                usage.mul_(0.9).add_(0.1 * counts)
                recent = [*recent[-19:], idx]
                if step >= ae_steps and s.restart_every and (step + 1) % s.restart_every == 0 and step + 1 < s.steps * 0.9:
                    dead = (usage < s.restart_threshold).nonzero().flatten()
                    if len(dead):
                        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, quant.embedding_dim)
                        pick = torch.randint(0, flat.shape[0], (len(dead),), generator=gen)
                        noise = 0.01 * torch.randn(len(dead), flat.shape[1], generator=gen)
                        quant.embedding.weight[dead] = flat[pick] + noise
                        usage[dead] = 1.0
                        restarts += len(dead)
            metrics = {
                "l1": float((recon.detach() - pixels).abs().mean()),
                "vq_loss": float(vq_loss.detach()),
                "locality": float(local.detach()),
                "codes_used": float(torch.unique(torch.cat(recent)).numel()) if step >= ae_steps else 0.0,
                "restarts": float(restarts),
            }
            bar.update(task, advance=1, info=f"l1 {metrics['l1']:.4f} codes {int(metrics['codes_used'])}")
            if log is not None and ((step + 1) % max(1, s.steps // 10) == 0 or step + 1 == s.steps):
                log(f"vq step {step + 1}: " + ", ".join(f"{n} {v:.4g}" for n, v in metrics.items()))
    vqgan.eval()
    for p in params:
        p.requires_grad_(False)
    metrics["seconds"] = time.perf_counter() - t0
    return metrics


@torch.no_grad()
def round_trip(vqgan: VQGAN, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Encode then decode ``pixels`` ``[B, 3, H, W]`` in [-1, 1] (eval mode, in batches)."""
    vqgan.eval()
    out = []
    for i in range(0, pixels.shape[0], batch_size):
        codes, _ = vqgan.encode(pixels[i : i + batch_size])
        out.append(vqgan.decode(codes))
    return torch.cat(out) if out else pixels[:0]

