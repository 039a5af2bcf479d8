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
    steps.jsonl  codes/        each step as it is done: a rerun after a kill goes on from them
    config.yaml  meta.json  log.txt
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont, ImageOps

from worldboot.errors import ConfigError, resolve_path
from worldboot.infer.outputs import save_candidates, save_png, save_tensors
from worldboot.infer.predict import PredictConfig, Prediction, make_generator, predict, sample_seed
from worldboot.infer.verify import Verifier
from worldboot.models.backbone import SamplingConfig
from worldboot.run_guards import claim_folder
from worldboot.runs import RunDir, write_atomic

#: Largest side of a strip frame: 4096 px frames of a 10-step rollout are a 0.5 GB strip.
MAX_FRAME = 4096


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
        if not 16 <= self.frame_size <= MAX_FRAME:
            raise ConfigError(f"frame_size must be 16 to {MAX_FRAME} pixels, got {self.frame_size} (the strip of k "
                              "steps is k + 1 frames wide, held in memory)")


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
    start: tuple[int, torch.Tensor] | None = None,
    on_step: Callable[[int, RolloutStep], None] | None = None,
) -> list[RolloutStep]:
    """Predict ``len(actions)`` steps, each from the previous step's predicted codes.

    Args:
        world: The world model.
        image: The first observation, or with ``start`` the image of the last step done.
        actions: One action per step.
        num_samples: N candidates per step.
        sampling: Sampling settings.
        seed: The rollout's seed (step ``i`` uses :func:`step_seed`, so a resumed rollout
            draws what an unbroken one does).
        verifier: Picks the best of each step's candidates; None keeps candidate 0.
        start: ``(steps done, codes of the last one's chosen prediction)`` to go on from.
        on_step: Called with each step's 0-based index as soon as it is predicted.

    Returns:
        The steps predicted here, in order.
    """
    first, source_codes = start if start is not None else (0, world.encode_images([image]).codes[0])
    source_image = image
    steps = []
    for i in range(first, len(actions)):
        action = actions[i]
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
        if on_step is not None:
            on_step(i, steps[-1])
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


#: Finished steps of a rollout, a line each: what a rerun after a kill goes on from.
PROGRESS_FILE = "steps.jsonl"


def _settings_key(cfg: RolloutConfig) -> str:
    """What makes a step's prediction (all but the actions after it): the image's content,
    the models, N, sampling and seed."""
    from worldboot.data.schema import content_hash

    return json.dumps({
        "image": content_hash(cfg.image), "world": str(resolve_path(cfg.world)) if cfg.world else None,
        "verifier": [str(resolve_path(cfg.verifier.path)), cfg.verifier.score] if cfg.verifier.path else None,
        "best_of": cfg.best_of, "sampling": dataclasses.asdict(cfg.sampling), "seed": cfg.seed,
    }, sort_keys=True)


def _steps_done(out: Path, cfg: RolloutConfig, key: str) -> list[dict[str, Any]]:
    """The entries of an earlier run's finished steps that this run would predict again: the
    same settings and, step by step, the same action, with their files in place."""
    from worldboot.runs import read_jsonl, repair_tail

    path = out / PROGRESS_FILE
    if not path.is_file() or not (out / "codes" / "source.safetensors").is_file():
        return []
    repair_tail(path)  # a kill mid-write
    done: list[dict[str, Any]] = []
    for _, row in read_jsonl(path):
        i = len(done)
        entry = row.get("entry") or {}
        if (row.get("key") != key or i >= len(cfg.actions) or entry.get("action") != cfg.actions[i]
                or not (out / f"step-{i + 1}.png").is_file() or not (out / "codes" / f"step-{i + 1}.safetensors").is_file()):
            break
        done.append(entry)
    return done


def _refuse_replacing(out: Path, done: list[dict[str, Any]]) -> None:
    """Refuse to replace steps an earlier rollout in ``out`` finished that this run would not
    keep (other settings, or another action at some step): they would be deleted.

    Raises:
        ConfigError: Naming how many steps, from which one, and the ways on.
    """
    from worldboot.runs import read_jsonl

    earlier = sum(1 for _ in read_jsonl(out / PROGRESS_FILE))
    if earlier > len(done):
        raise ConfigError(
            f"{out} holds a rollout of {earlier} steps whose steps from {len(done) + 1} on this run would replace "
            f"(other settings, or another action at step {len(done) + 1}): use another --out, or --fresh to "
            "replace them"
        )


def _clear_outputs(out: Path, keep: int = 0) -> None:
    """Remove what an earlier rollout wrote into ``out`` (the files of the module docstring),
    but its first ``keep`` steps."""
    import re
    import shutil

    def beyond(path: Path) -> bool:
        m = re.fullmatch(r"step-(\d+)(\.png|\.safetensors)?", path.name)
        return m is None or int(m.group(1)) > keep

    for path in [*out.glob("step-*.png"), *(out / "codes").glob("step-*"), *(out / "candidates").glob("step-*")]:
        if beyond(path) and path.is_dir():
            shutil.rmtree(path)
        elif beyond(path):
            path.unlink(missing_ok=True)
    for name in ("strip.png", "rollout.json", "codes.safetensors"):
        (out / name).unlink(missing_ok=True)


def _write_step(out: Path, cfg: RolloutConfig, i: int, step: RolloutStep) -> dict[str, Any]:
    """Write step ``i`` (1-based): its image, candidates and codes; returns its record entry."""
    pred = step.prediction
    save_png(pred.image, out / f"step-{i}.png")
    save_tensors({"candidates": pred.codes, "chosen": torch.tensor(pred.chosen)}, out / "codes" / f"step-{i}.safetensors")
    entry: dict[str, Any] = {"step": i, "action": step.action, "seed": step.seed, "image": f"step-{i}.png"}
    if pred.scores is not None or len(pred.images) > 1:
        entry.update(candidates=save_candidates(pred, out, f"step-{i}", cfg.verifier.score), chosen=pred.chosen)
    return entry


def run_rollout(
    cfg: RolloutConfig,
    world: Any | None = None,
    verifier: Verifier | None = None,
    fresh: bool = False,
) -> list[RolloutStep]:
    """Run a rollout and write its folder (see the module docstring). Each step is written
    as soon as it is predicted; a rerun with the same settings goes on after the last step
    written (also when actions were added at the end). Steps it would not keep (other
    settings, another action at a step, fewer actions) are refused unless ``fresh``.

    Args:
        cfg: Settings (validated here).
        world: An already loaded world model (default: from ``cfg.world``).
        verifier: An already loaded verifier (default: loaded from ``cfg.verifier.path`` if set).
        fresh: Replace an earlier rollout's steps this run would not keep, instead of refusing.

    Returns:
        The steps predicted by this run (those of an earlier run are read from the folder).
    """
    from safetensors.torch import load_file

    from worldboot.images import open_image
    from worldboot.infer.predict import load_models
    from worldboot.runs import append_jsonl

    cfg.validate()
    image = open_image(cfg.image)
    world, verifier = load_models(cfg, None, world, verifier)
    out = claim_folder(cfg.out, "rollout")
    key = _settings_key(cfg)
    done = _steps_done(out, cfg, key)
    if not fresh:  # before config.yaml is written: it describes the steps kept
        _refuse_replacing(out, done)
    with RunDir(out, cfg, "rollout", claimed=True) as rd:
        _clear_outputs(out, keep=len(done))  # an earlier rollout's other steps would stay beside these
        write_atomic(out / PROGRESS_FILE, "".join(json.dumps({"key": key, "entry": e}) + "\n" for e in done))
        rd.log(f"rollout of {len(cfg.actions)} actions from {cfg.image} with {cfg.world}; {len(done)} done before")
        height, width = world.image_shape
        shown = ImageOps.fit(image, (width, height), Image.LANCZOS)
        save_png(shown, out / "source.png")
        if done:
            last = load_file(str(out / "codes" / f"step-{len(done)}.safetensors"))
            start = (len(done), last["candidates"][int(last["chosen"])])
            source = load_file(str(out / "codes" / "source.safetensors"))["source"]
            image = open_image(out / f"step-{len(done)}.png")
        else:
            source = world.encode_images([image]).codes[0]
            save_tensors({"source": source}, out / "codes" / "source.safetensors")
            start = (0, source)
        entries = list(done)

        def write(i: int, step: RolloutStep) -> None:
            entries.append(_write_step(out, cfg, i + 1, step))
            append_jsonl(out / PROGRESS_FILE, [{"key": key, "entry": entries[-1]}])

        steps = rollout(world, image, cfg.actions, cfg.best_of, cfg.sampling, cfg.seed, verifier, start, write)
        tensors: dict[str, torch.Tensor] = {"source": source}
        frames = [shown]
        for i in range(1, len(cfg.actions) + 1):
            step_codes = load_file(str(out / "codes" / f"step-{i}.safetensors"))
            tensors[f"step-{i}.candidates"], tensors[f"step-{i}.chosen"] = step_codes["candidates"], step_codes["chosen"]
            frames.append(open_image(out / f"step-{i}.png"))
        save_tensors(tensors, out / "codes.safetensors")
        strip = draw_strip(frames, ["source", *(f"{i}. {a}" for i, a in enumerate(cfg.actions, start=1))], cfg.frame_size)
        save_png(strip, out / "strip.png")
        summary = {
            "image": str(resolve_path(cfg.image)),
            "world": str(resolve_path(cfg.world)) if cfg.world else None,
            "verifier": str(resolve_path(cfg.verifier.path)) if cfg.verifier.path else None,
            "verifier_score": cfg.verifier.score if cfg.verifier.path else None,
            "verifier_reencoded": bool(verifier is not None and verifier.reencode),
            "best_of": cfg.best_of,
            "sampling": dataclasses.asdict(cfg.sampling),
            "seed": cfg.seed,
            "steps": entries,
        }
        write_atomic(out / "rollout.json", json.dumps(summary, indent=2) + "\n")
        rd.log(f"wrote {len(steps)} steps ({len(done)} from before) and strip.png")
    return steps
