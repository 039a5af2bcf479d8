"""Small data makers shared by tests (not fixtures: plain functions with explicit seeds)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from worldboot.data.schema import Triplet, write_manifest

COLOURS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 180, 60), "yellow": (230, 200, 30)}


def square_triplets(root: Path, n: int, seed: int = 0, size: int = 64) -> list[Triplet]:
    """Triplets of a coloured square moved left or right on a grey table, written as PNGs.

    A minimal world with a learnable rule (the action names the colour and the direction), for
    tests of stages that must not depend on the procedural world's module.
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
        direction = "left" if rng.random() < 0.5 else "right"
        x = int(rng.integers(24, 40))
        y = int(rng.integers(16, 48))
        dx = -16 if direction == "left" else 16
        paths = []
        for tag, cx in (("src", x), ("tgt", x + dx)):
            img = Image.new("RGB", (size, size), (128, 128, 128))
            ImageDraw.Draw(img).rectangle([cx - 6, y - 6, cx + 6, y + 6], fill=COLOURS[colour])
            p = root / f"{i:04d}_{tag}.png"
            img.save(p)
            paths.append(str(p))
        out.append(Triplet(f"sq{i:04d}", f"squares/{direction}", paths[0], f"move the {colour} square {direction}",
                           paths[1], {}))
    write_manifest(root / "manifest.jsonl", out)
    return out


def undecodable_png(path: Path, size: int = 8) -> Path:
    """Write a PNG whose chunks and checksums are valid but whose pixel data is not a zlib
    stream: it opens (and passes ``Image.verify``), and fails only when its pixels are read."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"\x78\x9c" + b"\xff" * 64)
                     + chunk(b"IEND", b""))
    return path


def json_entry_lines(entries: Sequence, indent: int = 1) -> list[int]:
    """The line each entry of ``json.dumps(entries, indent=indent)`` starts on (the list's
    "[" is line 1), counted from each entry's own dump."""
    import json

    lines, line = [], 2
    for entry in entries:
        lines.append(line)
        line += json.dumps(entry, indent=indent).count("\n") + 1
    return lines


def own_colour_share(backbone) -> float:
    """Share of the world base's object codes whose input embedding is nearest (cosine) to the
    embedding of their own colour word among the world's colour words: about 1 / 6 for random
    embeddings, near 1 when the codes start from their words."""
    import torch

    from worldboot.world.patches import code_meaning, patch_code_count
    from worldboot.world.scene import COLOURS as WORLD_COLOURS

    table = backbone.model.get_input_embeddings().weight.detach()
    words = {c: backbone.tokenizer(" " + c, add_special_tokens=False)["input_ids"] for c in WORLD_COLOURS}
    assert all(len(ids) == 1 for ids in words.values()), words
    colours = torch.nn.functional.normalize(table[[words[c][0] for c in WORLD_COLOURS]], dim=1)
    hits, per_cell = 0, 2
    n_codes = patch_code_count(per_cell)
    for code in range(1, n_codes):
        (_shape, _state, colour, _size), _part = code_meaning(code, per_cell)
        v = torch.nn.functional.normalize(table[int(backbone.code_to_token[code])], dim=0)
        hits += WORLD_COLOURS[int((colours @ v).argmax())] == colour
    return hits / (n_codes - 1)


# -- float32 agreement ------------------------------------------------------------------------------
#
# A test that compares two float32 computations of one value done in another order (another batch
# shape or BLAS blocking, another process count, another instruction set) allows what rounding
# can do, derived here, and no figure that happened to pass on one machine.

#: float32's unit roundoff: one rounding moves a result by at most this fraction of it.
F32_U = 2.0**-24
#: Rounding errors taken as independent and of mean zero: a result of n roundings then lies within
#: lambda * sqrt(n) * u of the exact one, relative to the magnitudes it sums, except with probability
#: below 2n * exp(-lambda^2 / 2) (Higham and Mary, SIAM J. Sci. Comput. 41(5), 2019). lambda = 10
#: makes that under 1e-17 here; typical rounding is within lambda = 1 to 3, which is the margin
#: for sums whose terms are somewhat larger than their result.
ROUNDING_SIGMAS = 10.0
#: Roundings behind one value of the tests' tiny models (a token's log-probability, a gradient
#: element of the tiny Chameleon: the softmax over 2,560 tokens, forward and backward through 2
#: layers of 128- and 256-wide dot products over up to ~200 positions, and the sums over a batch's
#: tokens, ~1,200; the tiny CLIP, DINOv2, LLaVA and Gemma are smaller, and the tiny VQ encoder's
#: 3x3 convolutions of up to 64 channels and group norms over up to 4,096 values about as deep):
#: under 2^14.
TINY_ROUNDINGS = 2**14
#: What the derivations take of the tiny runs' loss as a function of the LoRA weights (power
#: iteration and finite differences of the gradient, steps 1-4 of the training tests' runs;
#: properties of the model and data, not of the machine): the Hessian's largest eigenvalue is about
#: 11 (dynamics), 5 (dynamics-rl) and 1.6 (world-rl), and the clip can double the slope of the
#: clipped gradient: 25 is taken.
TINY_CURVATURE = 25.0
#: ... and a token's log-probability moves by at most this per unit of l2 distance in the LoRA
#: weights (8.1 measured on trained tiny runs, so the mean loss moves by no more either).
TINY_LOGPROB_SLOPE = 20.0


def f32_atol(scale: float, roundings: int = TINY_ROUNDINGS) -> float:
    """Most two float32 computations of one value in different orders can differ by: each lies
    within ``ROUNDING_SIGMAS * sqrt(roundings) * F32_U * scale`` of the exact value, where ``scale``
    bounds the magnitudes summed (for a sum of same-signed terms, the value itself)."""
    return 2 * ROUNDING_SIGMAS * math.sqrt(roundings) * F32_U * float(scale)


def adam_slope(t: int, betas: Sequence[float] = (0.9, 0.999)) -> float:
    """How much AdamW's step ``t`` update m/(sqrt(v) + eps) (bias-corrected) moves, times eps, per
    unit of change of the gradients of steps 1..t: ``1 + rho_t``.

    m = sum_i c_i g_i and v = sum_i d_i g_i^2 with sum c_i = sum d_i = 1; the slopes in g_i sum to at
    most (1 + |m| / sqrt(v)) / (sqrt(v) + eps), and |m| <= rho_t * sqrt(v) with
    rho_t = sqrt(sum_i c_i^2 / d_i) (Cauchy-Schwarz; 1.00 for the first steps at the default betas).
    """
    b1, b2 = betas
    c = [(1 - b1) * b1 ** (t - i) / (1 - b1**t) for i in range(1, t + 1)]
    d = [(1 - b2) * b2 ** (t - i) / (1 - b2**t) for i in range(1, t + 1)]
    return 1 + math.sqrt(sum(ci * ci / di for ci, di in zip(c, d, strict=True)))


def adamw_atol(steps: int, lr: float, eps: float, max_grad_norm: float, betas: Sequence[float] = (0.9, 0.999)) -> float:
    """Most the LoRA weights (as one vector, l2 norm) of two tiny runs of ``steps`` AdamW steps can
    differ by when their gradients are the same float32 sums taken in another order (one process
    with micro-batch 2 against two with micro-batch 1, under DDP or DeepSpeed), to first order in
    the rounding.

    - Each step's gradient is clipped to norm ``max_grad_norm``, taken to bound the terms summed
      into it too: the runs' gradients differ by delta = f32_atol(max_grad_norm) at most (l2).
    - AdamW moves each weight by lr * m/(sqrt(v) + eps): its slopes in that weight's gradients of
      steps 1..t sum to at most lr * adam_slope(t) / eps, so step t moves the runs apart by at most
      lr * adam_slope(t) / eps times the l2 norm of all t gradient differences. This is finite
      only because eps is: at eps 1e-8 an element whose gradient is near 0 (LoRA's A starts at
      exactly 0) turns a 1e-10 rounding into a move of up to lr, which is why the agreement tests
      set eps = 1 (so AdamW is near SGD with step lr / eps, and the slope is small).
    - A difference of the weights feeds into the next gradients through the loss's curvature:
      step s's gradients differ by delta + TINY_CURVATURE * (the weights' difference before it).

    The learning rate is the peak one (a schedule only lowers it) and weight decay is 0.
    """
    delta = f32_atol(max_grad_norm)
    diff, grad_diffs = 0.0, []
    for t in range(1, steps + 1):
        grad_diffs.append(delta + TINY_CURVATURE * diff)
        diff += lr * adam_slope(t, betas) / eps * math.sqrt(sum(e * e for e in grad_diffs))
    return diff


def assert_adapters_agree(a: Mapping, b: Mapping, atol: float, moved: float = 20.0) -> None:
    """Two LoRA adapters' weights (name -> tensor) are within ``atol`` of each other (l2 norm over
    all of them), and training moved them ``moved`` times further than that (LoRA's B starts at
    0), so that the comparison can still fail: a run that skipped an all-reduce or saw other
    samples ends about as far from the other as training moved it."""
    import torch

    assert a.keys() == b.keys() and len(a) > 0
    diff = float(torch.cat([(a[k].double() - b[k].double()).flatten() for k in a]).norm())
    trained = float(torch.cat([a[k].double().flatten() for k in a if "lora_B" in k]).norm())
    assert diff <= atol, f"the adapters differ by {diff:.3g} (l2), more than the {atol:.3g} rounding allows"
    assert trained > moved * atol, f"training moved LoRA's B by {trained:.3g} only: too little against {atol:.3g}"


def assert_losses_agree(one: Sequence[float], two: Sequence[float], lr: float, eps: float, max_grad_norm: float) -> None:
    """The per-step mean losses of two such runs agree: step k's loss is a mean of per-token
    cross-entropies (all positive, so the loss bounds them) computed in another order, f32_atol(loss),
    on weights that differ by adamw_atol(k - 1) at most, which moves it by TINY_LOGPROB_SLOPE times that."""
    assert len(one) == len(two) > 0, (one, two)
    for step, (x, y) in enumerate(zip(one, two, strict=True), start=1):
        tol = f32_atol(abs(x)) + TINY_LOGPROB_SLOPE * adamw_atol(step - 1, lr, eps, max_grad_norm)
        assert abs(x - y) <= tol, f"step {step}: loss {x} against {y}, more than the {tol:.3g} rounding allows"


def rl_config(base, cache_dir, out, **fields):
    """A tiny reward-optimisation run (``world-rl`` unless ``task`` says ``dynamics-rl``) on one cache: LoRA
    without dropout, a constant lr of 5e-3, 6 steps of 4 prompts in micro-batches of 2, a metrics
    line every step, no checkpoint or evaluation before the end; ``fields`` override any of it.

    Args:
        base: The policy's model directory.
        cache_dir: The token cache of its prompts.
        out: Its run directory.
        **fields: Fields of :class:`~worldboot.train.rl_config.GRPOConfig`, or of
            :class:`~worldboot.train.rl_config.DPOConfig` with ``objective="dpo"``.
    """
    from worldboot.train.config import DataSettings, LoraSettings, OptimSettings, SourceSettings
    from worldboot.train.rl_config import DPOConfig, GRPOConfig

    settings = dict(
        task="world-rl", base_model=str(base), out=str(out), max_steps=6, batch_size=4, micro_batch_size=2,
        save_every=0, eval_every=0, log_every=1, lora=LoraSettings(dropout=0.0),
        data=DataSettings(sources=[SourceSettings(cache=str(cache_dir))], eval_fraction=0.1),
        optim=OptimSettings(lr=5e-3, warmup_steps=0, scheduler="constant"),
    )
    settings.update(fields)
    return (DPOConfig if settings.get("objective") == "dpo" else GRPOConfig)(**settings)


#: The models of :func:`make_study`'s studies.
STUDY_MODELS = ["A", "B", "R"]


def make_study(root: Path, items: Mapping[str, str], text: str | None = None, name: str = "human",
               reference: str | None = "R") -> Path:
    """A human study of the models A, B and R on ``{item id: subset}``, with an 8-px image of
    each item for the source and every model, written to ``root/study.yaml``; ``text``
    replaces the YAML (the images stay)."""
    import yaml

    for n, item_id in enumerate(items):
        for folder in ["src", *STUDY_MODELS]:
            (root / folder).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (n, 0, 0)).save(root / folder / f"{item_id}.png")
    data = {
        "name": name,
        "items": [{"id": i, "subset": s, "source": f"src/{i}.png", "action": "act"} for i, s in items.items()],
        "models": {m: m for m in STUDY_MODELS},
        **({"reference": reference} if reference else {}),
    }
    path = root / "study.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(data, sort_keys=False))
    return path
