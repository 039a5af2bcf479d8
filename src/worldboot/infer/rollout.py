"""Rollouts: several actions in a row, each prediction the next step's source (the paper's Figure 8).

Step ``i + 1`` is conditioned on the *codes* of step ``i``'s prediction, not on a re-encoding
of its pixels: the world model continues from exactly what it produced (re-encoding a decoded
image does not give back the same codes). With a verifier each step is best-of-N.

Output folder::

    source.png                 the input as the model sees it (centre-cropped square)
    step-1.png ... step-k.png  the prediction of each step
    strip.png                  source and steps side by side, each action under its frame
    candidates/step-i/<k>.png  every candidate of step i (with a verifier or N > 1)
    codes.safetensors          source codes, then candidates [N, L] and chosen of each step
    rollout.json               actions, seeds, scores, chosen, sampling, models
    config.yaml  meta.json  log.txt
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from worldboot.errors import ConfigError
from worldboot.infer.outputs import save_png, save_tensors
from worldboot.infer.predict import PredictConfig, Prediction, make_generator, predict, sample_seed
from worldboot.infer.verify import Verifier
from worldboot.models.backbone import SamplingConfig
from worldboot.runs import RunDir, write_atomic


@dataclass
class RolloutConfig(PredictConfig):
    """``worldboot rollout``: one image, several actions.

    Attributes:
        image: The first observation.
        actions: The actions, one per step.
        out: The output folder.
        frame_size: Side of each frame in the strip, in pixels.
    """

    image: str | None = None
    actions: list[str] = field(default_factory=list)
    out: str | None = None
    frame_size: int = 256

    def validate(self) -> None:
        super().validate()
        if not self.image:
            raise ConfigError("no image: pass IMAGE (config: image)")
        if not self.actions:
            raise ConfigError('no action: pass --action "..." once per step')
        empty = [i + 1 for i, a in enumerate(self.actions) if not a.strip()]
        if empty:
            raise ConfigError(f"action {empty[0]} is empty")
        if not self.out:
            raise ConfigError("no output folder: pass --out DIR")
        if self.frame_size < 16:
            raise ConfigError(f"frame_size must be at least 16 pixels, got {self.frame_size}")


@dataclass
class RolloutStep:
    """One step: its source codes, action, seed and best-of-N prediction."""

    source_codes: torch.Tensor
    action: str
    seed: int
    prediction: Prediction


def step_seed(run_seed: int, step: int) -> int:
    """The seed of step ``step`` (0-based) of a rollout."""
    return sample_seed(run_seed, f"rollout-step-{step}")


def rollout(
    world: Any,
    image: Image.Image,
    actions: Sequence[str],
    num_samples: int = 1,
    sampling: SamplingConfig | None = None,
    seed: int = 0,
    verifier: Verifier | None = None,
) -> list[RolloutStep]:
    """Predict ``len(actions)`` steps, each from the previous step's predicted codes.

    Args:
        world: The world model.
        image: The first observation.
        actions: One action per step.
        num_samples: N candidates per step.
        sampling: Sampling settings.
        seed: The rollout's seed (step ``i`` uses :func:`step_seed`).
        verifier: Picks the best of each step's candidates; None keeps candidate 0.

    Returns:
        The steps, in order.
    """
    source_codes = world.encode_images([image]).codes[0]
    source_image = image
    steps = []
    for i, action in enumerate(actions):
        seed_i = step_seed(seed, i)
        pred = predict(
            world,
            [source_codes],
            [action],
            num_samples,
            sampling,
            [make_generator(seed_i, world.device)],
            verifier,
            [source_image],
        )[0]
        steps.append(RolloutStep(source_codes, action, seed_i, pred))
        source_codes, source_image = pred.chosen_codes, pred.image
    return steps


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        # Pillow >= 10.1 ships a scalable default font.
        return ImageFont.load_default(size=size)
    except TypeError:
        return ImageFont.load_default()


def draw_strip(frames: Sequence[Image.Image], captions: Sequence[str], frame_size: int = 256) -> Image.Image:
    """Frames side by side, each with its caption wrapped underneath (white background).

    Args:
        frames: The images (resized to ``frame_size`` squares; pixels stay sharp when upscaled).
        captions: One caption per frame.
        frame_size: Side of each frame.
    """
    pad = max(4, frame_size // 32)
    font = _font(max(10, frame_size // 14))
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    char_w = max(1.0, probe.textlength("abcdefghijklmnopqrstuvwxyz", font=font) / 26)
    width_chars = max(8, int(frame_size / char_w))
    wrapped = [textwrap.wrap(c, width_chars)[:4] or [""] for c in captions]
    line_h = int(sum(probe.textbbox((0, 0), "Ag", font=font)[1::2]) * 0.5 + pad)
    text_h = max(len(w) for w in wrapped) * line_h + pad
    strip = Image.new("RGB", (len(frames) * (frame_size + pad) + pad, frame_size + 2 * pad + text_h), "white")
    draw = ImageDraw.Draw(strip)
    for i, (frame, lines) in enumerate(zip(frames, wrapped, strict=True)):
        x = pad + i * (frame_size + pad)
        resample = Image.NEAREST if frame.width < frame_size else Image.LANCZOS
        strip.paste(frame.convert("RGB").resize((frame_size, frame_size), resample), (x, pad))
        for j, line in enumerate(lines):
            w = draw.textlength(line, font=font)
            draw.text((x + (frame_size - w) / 2, frame_size + 2 * pad + j * line_h), line, fill="black", font=font)
    return strip


def _clear_outputs(out: Path) -> None:
    """Remove what an earlier rollout wrote into ``out`` (the files of the module docstring)."""
    import shutil

    for path in [*out.glob("step-*.png"), out / "strip.png", out / "source.png", out / "rollout.json",
                 out / "codes.safetensors"]:
        path.unlink(missing_ok=True)
    shutil.rmtree(out / "candidates", ignore_errors=True)


def run_rollout(
    cfg: RolloutConfig,
    world: Any | None = None,
    verifier: Verifier | None = None,
) -> list[RolloutStep]:
    """Run a rollout and write its folder (see the module docstring).

    Args:
        cfg: Settings (validated here).
        world: An already loaded world model (default: from ``cfg.world``).
        verifier: An already loaded verifier (default: loaded from ``cfg.verifier.path`` if set).
    """
    from worldboot.images import open_image
    from worldboot.infer.predict import load_models

    cfg.validate()
    image = open_image(cfg.image)
    world, verifier = load_models(cfg, None, world, verifier)
    out = Path(cfg.out)
    with RunDir(out, cfg, "rollout") as rd:
        _clear_outputs(out)  # an earlier rollout's steps would stay beside this one's
        rd.log(f"rollout of {len(cfg.actions)} actions from {cfg.image} with {cfg.world}")
        steps = rollout(world, image, cfg.actions, cfg.best_of, cfg.sampling, cfg.seed, verifier)
        side = world.image_size
        shown = ImageOps.fit(image, (side, side), Image.LANCZOS)
        save_png(shown, out / "source.png")
        tensors: dict[str, torch.Tensor] = {"source": steps[0].source_codes}
        record: list[dict[str, Any]] = []
        for i, step in enumerate(steps, start=1):
            pred = step.prediction
            save_png(pred.image, out / f"step-{i}.png")
            tensors[f"step-{i}.candidates"] = pred.codes
            tensors[f"step-{i}.chosen"] = torch.tensor(pred.chosen)
            entry: dict[str, Any] = {"step": i, "action": step.action, "seed": step.seed, "image": f"step-{i}.png"}
            if pred.scores is not None or len(pred.images) > 1:
                cands = []
                for k, img in enumerate(pred.images):
                    path = out / "candidates" / f"step-{i}" / f"{k}.png"
                    save_png(img, path)
                    c: dict[str, Any] = {"image": path.relative_to(out).as_posix(), "score": None}
                    if pred.scores is not None:
                        c.update(
                            score=float(pred.scores.get(cfg.verifier.score)[k]),
                            total=float(pred.scores.total[k]),
                            mean=float(pred.scores.mean[k]),
                        )
                    cands.append(c)
                entry.update(candidates=cands, chosen=pred.chosen)
            record.append(entry)
        save_tensors(tensors, out / "codes.safetensors")
        strip = draw_strip(
            [shown, *(s.prediction.image for s in steps)],
            ["source", *(f"{i}. {s.action}" for i, s in enumerate(steps, start=1))],
            cfg.frame_size,
        )
        save_png(strip, out / "strip.png")
        summary = {
            "image": str(Path(cfg.image).resolve()),
            "world": str(Path(cfg.world).resolve()) if cfg.world else None,
            "verifier": str(Path(cfg.verifier.path).resolve()) if cfg.verifier.path else None,
            "verifier_score": cfg.verifier.score if cfg.verifier.path else None,
            "verifier_reencoded": bool(verifier is not None and verifier.reencode),
            "best_of": cfg.best_of,
            "sampling": dataclasses.asdict(cfg.sampling),
            "seed": cfg.seed,
            "steps": record,
        }
        write_atomic(out / "rollout.json", json.dumps(summary, indent=2) + "\n")
        rd.log(f"wrote {len(steps)} steps and strip.png")
    return steps
