"""Training a Chameleon-architecture VQ tokenizer whose codes are given (supervised).

The model is transformers' ``ChameleonVQVAE`` (encoder, ``quant_conv``, quantizer,
``post_quant_conv``) plus our :class:`~worldboot.models.vq.ChameleonVQDecoder`, so that a
trained tokenizer drops into a Chameleon backbone unchanged and runs the same code path as
Anole's.

Unlike a VQ-VAE, which invents its codes, this trainer is told the code of every token
position: a data source that knows what each image patch shows (the procedural world's
renderer does) names it. Two losses, one step:

* **encoder**: cross-entropy over the codebook with the quantizer's own logits, minus the
  squared distance of each pre-quantisation feature to every code vector, so that
  ``argmin`` distance, what :meth:`~worldboot.models.vq.VQGAN.encode` returns, is the given
  code;
* **decoder**: the squared pixel error of decoding the *given* codes (not the encoder's), with
  ``object_weight`` times more weight on pixels that differ from the image's table colour, so
  the decoder learns the drawing of every code regardless of how well the encoder does yet.

Why supervised: learnt codes were neither exact nor local on the world. The best unsupervised
recipe (VQ-VAE with k-means initialisation, dead-code restarts and a locality loss) parsed
back 37 % of held-out scenes and changed the code of 21 % of the positions an action did not
touch (``docs/log.md``). Given codes make both properties a matter of classification
accuracy. No maintained library trains a Chameleon VQ this way; the loop is a few lines.

The loop itself is model-side: batches come from a callable, which :mod:`worldboot.base`
fills with world scenes and their codes (the world base is its only user, so it lives here).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers.models.chameleon.configuration_chameleon import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonVQVAE

from worldboot.bounds import bounded
from worldboot.models.vq import VQGAN, ChameleonVQDecoder
from worldboot.progress import progress_bar


@dataclass
class VQTrainSettings:
    """How the tokenizer is trained.

    Attributes:
        steps: Optimiser steps.
        batch_size: Images per step (each feeds the encoder and, by its codes, the decoder).
        lr: Peak AdamW learning rate (linear warm-up over 20 steps, cosine to 5 %).
        object_weight: Weight of object pixels in the decoder's loss (the table is most of an
            image; without it the decoder first learns only the table).
        seed: Seeds initialisation.
    """

    steps: int = bounded(1500, ge=0)
    batch_size: int = bounded(4, ge=1)
    lr: float = bounded(2e-3, gt=0)
    object_weight: float = bounded(3.0, gt=0)
    seed: int = 0


class VQBatch(NamedTuple):
    """One training batch.

    Attributes:
        inputs: ``[B, 3, H, W]`` in [-1, 1], what the encoder sees (may be jittered or resized).
        codes: ``[B, h, w]`` long, the code of every token position.
        targets: ``[B, 3, H, W]`` in [-1, 1], what the codes should decode to.
    """

    inputs: torch.Tensor
    codes: torch.Tensor
    targets: torch.Tensor


def build_vq(config: ChameleonVQVAEConfig | dict[str, Any], seed: int = 0) -> VQGAN:
    """A randomly initialised tokenizer (transformers' VQ model + our decoder) for ``config``."""
    if isinstance(config, dict):
        config = ChameleonVQVAEConfig(**config)
    torch.manual_seed(seed)
    return VQGAN(ChameleonVQVAE(config), ChameleonVQDecoder(config))


def reset_init(vqgan: VQGAN) -> None:
    """PyTorch's default initialisation for every convolution, norm and linear layer, and unit
    normal code vectors; seed torch first.

    transformers initialises the VQ model like its language model (normal with std 0.02, meant
    for converted checkpoints), which shrinks the signal through every convolution and leaves a
    fresh tokenizer learning very slowly.
    """
    for module in vqgan.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.Linear)):
            module.reset_parameters()
    torch.nn.init.normal_(vqgan.vq.quantize.embedding.weight)


def code_logits(vqgan: VQGAN, pixels: torch.Tensor) -> torch.Tensor:
    """``[B * h * w, K]``: minus the squared distance of each position's pre-quantisation
    feature to each code vector (the quantizer picks the largest)."""
    z = vqgan.vq.quant_conv(vqgan.vq.encoder(pixels))
    z = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    book = vqgan.vq.quantize.embedding.weight
    return -(z.pow(2).sum(1, keepdim=True) - 2 * z @ book.t() + book.pow(2).sum(1)[None])


def object_weights(targets: torch.Tensor, codes: torch.Tensor, object_weight: float) -> torch.Tensor:
    """``[B, 1, H, W]``: ``object_weight`` on the pixels of cells whose code is not 0 (the
    empty cell), 1 elsewhere."""
    full = (codes != 0).float()[:, None]
    full = torch.nn.functional.interpolate(full, size=targets.shape[-2:], mode="nearest")
    return 1.0 + (object_weight - 1.0) * full


def train_vq(
    vqgan: VQGAN,
    sample_batch: Callable[[int, int], VQBatch],
    settings: VQTrainSettings | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """Train ``vqgan`` in place on batches whose codes are given.

    Args:
        vqgan: The tokenizer (see :func:`build_vq`).
        sample_batch: ``sample_batch(step, batch_size)`` returns a :class:`VQBatch`;
            deterministic in ``step`` for a reproducible run.
        settings: Hyper-parameters.
        progress: Show a progress bar (on stderr; ``WORLDBOOT_NO_PROGRESS`` turns it off).
        log: Called with a line of metrics now and then.

    Returns:
        ``code_accuracy`` (encoder codes equal to the given ones, last 20 batches),
        ``decoder_mse`` (last 20 batches, pixels in [-1, 1]), ``codes_used`` (distinct codes the
        batches taught), ``seconds``.
    """
    s = settings or VQTrainSettings()
    torch.manual_seed(s.seed)
    reset_init(vqgan)
    vqgan.train()
    params = list(vqgan.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=s.lr, betas=(0.9, 0.99), weight_decay=0.0)
    warm = min(20, max(1, s.steps // 10))

    def lr_at(step: int) -> float:
        if step < warm:
            return s.lr * (step + 1) / warm
        u = (step - warm) / max(1, s.steps - warm)
        return s.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * u)))

    hits: list[float] = []
    errors: list[float] = []
    used: set[int] = set()
    t0 = time.perf_counter()
    bar = progress_bar("[bold]VQ tokenizer", progress, info=True)
    with bar:
        task = bar.add_task("vq", total=s.steps, info="")
        for step in range(s.steps):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            batch = sample_batch(step, s.batch_size)
            target_codes = batch.codes.flatten()
            logits = code_logits(vqgan, batch.inputs)
            code_loss = torch.nn.functional.cross_entropy(logits, target_codes)
            emb = vqgan.vq.quantize.embedding(batch.codes).permute(0, 3, 1, 2)
            recon = vqgan.decoder(vqgan.vq.post_quant_conv(emb))
            w = object_weights(batch.targets, batch.codes, s.object_weight)
            mse = ((recon - batch.targets).pow(2) * w).sum() / (w.sum() * recon.shape[1])
            loss = code_loss + mse
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            with torch.no_grad():
                hits = [*hits[-19:], float((logits.argmax(1) == target_codes).float().mean())]
                errors = [*errors[-19:], float((recon - batch.targets).pow(2).mean())]
                used.update(target_codes.unique().tolist())
            bar.update(task, advance=1, info=f"codes {hits[-1]:.3f} mse {errors[-1]:.4f}")
            if log is not None and ((step + 1) % max(1, s.steps // 10) == 0 or step + 1 == s.steps):
                log(f"vq step {step + 1}: code accuracy {sum(hits) / len(hits):.4f}, mse {sum(errors) / len(errors):.5f}")
    vqgan.eval()
    for p in params:
        p.requires_grad_(False)
    return {
        "code_accuracy": sum(hits) / max(1, len(hits)),
        "decoder_mse": sum(errors) / max(1, len(errors)),
        "codes_used": float(len(used)),
        "seconds": time.perf_counter() - t0,
    }

