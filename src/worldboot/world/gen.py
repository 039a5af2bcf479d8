"""Datasets drawn from the procedural world: labelled triplets and unlabelled video clips.

Both generators are deterministic by seed: item ``i`` of a run draws from its own random
stream (seeded by the run's seed and ``i``), so asking for more items keeps the first ones,
and a killed run that is started again produces the same files.

**Triplets** (:func:`generate_triplets`), the labelled data a dynamics model is trained on::

    OUT/manifest.jsonl                    one Triplet per line (see data/schema.py)
    OUT/images/<family>/<id>-source.png
    OUT/images/<family>/<id>-target.png

Each line's ``action`` is one of the action's paraphrases; ``meta`` holds the structured
``action``, its ``canonical`` text and ``template`` index, and the ``source_scene`` and
``target_scene`` (so a judge needs no parsing of the source).

**Clips** (:func:`generate_clips`), unlabelled videos like Kinetics' for mining trajectories::

    OUT/<class>/clip_00000.mp4            one folder per class, as in Kinetics
    OUT/ground_truth.jsonl                per clip: its actions with frame spans (evaluation only)
    OUT/world_clips.json                  the settings, so that a rerun resumes consistently

In a clip several actions happen one after another, by default each a cut from one still scene
to the next (``ClipSpec.transition``; longer ones are animated smoothly: positions, colours and
sizes interpolated, a bottle tilting, a lid sliding), with idle stretches of at least 24 frames
between them, so that key-frames taken 20 or more frames apart can separate actions. The camera
may shake by a pixel or two (``ClipSpec.jitter``; still by default). A clip's class is its
dominant action family (:data:`CLIP_CLASSES`); the classes are balanced.

(Just over 400 lines: the triplet and clip generators share the scene and frame helpers.)
"""

from __future__ import annotations

import json
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from worldboot.data.schema import Problems, Triplet, iter_jsonl, visible_files, write_manifest
from worldboot.errors import DataError
from worldboot.progress import progress_bar
from worldboot.runs import atomic_path, write_atomic
from worldboot.world.actions import Action, acted_on, apply, sample_action
from worldboot.world.render import _check_size, draw_poses, extent, object_pose, render
from worldboot.world.scene import FAMILIES, SUBSETS, Scene, sample_scene
from worldboot.world.text import action_text, canonical_text, templates_for

#: Action family -> the Kinetics-like class of clips dominated by it.
CLIP_CLASSES: dict[str, str] = {
    "move": "moving_things",
    "count": "adding_and_removing_things",
    "relation": "arranging_things",
    "attribute": "recolouring_and_resizing_things",
    "motion": "tipping_and_opening_things",
}
MANIFEST = "manifest.jsonl"
GROUND_TRUTH = "ground_truth.jsonl"
CLIP_SETTINGS = "world_clips.json"
#: The most frames a second an mp4 (mp4v) time base holds: OpenCV cannot open a writer above it.
MAX_FPS = 65535


def _families(subsets: Sequence[str] | None) -> list[str]:
    if not subsets:
        return list(FAMILIES)
    out = []
    for name in subsets:
        family = name.removeprefix("world/")
        if family not in FAMILIES:
            raise DataError(f"unknown world subset {name!r}; choose from {', '.join(SUBSETS.values())}")
        if family not in out:  # world/move and move twice: one family, written once
            out.append(family)
    return out


def sample_pair(rng: random.Random, family: str, tries: int = 100) -> tuple[Scene, Action]:
    """A random scene and a valid action of ``family`` in it."""
    for _ in range(tries):
        scene = sample_scene(rng)
        action = sample_action(scene, family, rng)
        if action is not None:
            return scene, action
    raise RuntimeError(f"no valid {family} action in {tries} random scenes")  # pragma: no cover


def _save_png(img: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")


def generate_triplets(
    out_dir: str | os.PathLike[str],
    n_per_subset: int,
    seed: int = 0,
    size: int = 64,
    subsets: Sequence[str] | None = None,
    paraphrase: bool = True,
    progress: bool = False,
) -> list[Triplet]:
    """Write labelled (source, action, target) triplets for each world subset.

    Args:
        out_dir: Output folder (created); see the module docstring for its layout.
        n_per_subset: Triplets per subset.
        seed: Seed of the whole run.
        size: Image side in pixels (a multiple of 4; 64 matches the tiny Chameleon).
        subsets: Families or subset names (default: all five).
        paraphrase: Use a random template per triplet (False: always the canonical text).
        progress: Show a progress bar.

    Returns:
        The triplets, as written to ``out_dir/manifest.jsonl``.
    """
    if n_per_subset < 0:
        raise DataError(f"n_per_subset must be >= 0, got {n_per_subset}")
    _check_size(size, 4)
    out = Path(out_dir)
    families = _families(subsets)
    triplets = []
    with progress_bar(None, progress) as bar:
        task = bar.add_task("triplets", total=n_per_subset * len(families))
        for family in families:
            for i in range(n_per_subset):
                rng = random.Random(f"worldboot/world/triplet/{seed}/{family}/{i}")
                scene, action = sample_pair(rng, family)
                target = apply(scene, action)
                template = rng.randrange(len(templates_for(action))) if paraphrase else 0
                tid = f"world-{family}-{i:06d}"
                src = out / "images" / family / f"{tid}-source.png"
                tgt = out / "images" / family / f"{tid}-target.png"
                _save_png(render(scene, size), src)
                _save_png(render(target, size), tgt)
                meta = {
                    "action": action.to_json(),
                    "canonical": canonical_text(action),
                    "template": template,
                    "source_scene": scene.to_json(),
                    "target_scene": target.to_json(),
                    "size": size,
                    "seed": seed,
                }
                triplets.append(
                    Triplet(tid, SUBSETS[family], str(src), action_text(action, template), str(tgt), meta)
                )
                bar.advance(task)
    write_manifest(out / MANIFEST, triplets)
    return triplets


# --------------------------------------------------------------------------------------------
# Clips
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClipSpec:
    """How clips are made (saved beside them, so a resumed run cannot mix settings).

    Attributes:
        size: Frame side in pixels (a multiple of 4).
        fps: Frames per second written in the video.
        actions: Fewest and most actions per clip.
        transition: Fewest and most frames an action's animation lasts. The default, one frame,
            makes each action a cut between two still scenes. The miner's key-frames are the
            frames of most motion: with animated actions (10-20 frames) 73 % of its pairs had a
            frame inside an animation, a picture of no scene, which no label describes and the
            world's judge cannot parse (docs/log.md, 2026-12-06).
        idle: Fewest and most still frames before, between and after actions. Keep the minimum
            above the key-frame spacing of the miner (20) so that key-frames can separate actions.
        jitter: Largest camera shake in pixels; capped at the gap around large objects so that
            none is cut by the image border. The default is a still camera: a one-pixel shake
            moves every object's edges, which optical flow scores above a cut of one object
            (mean DIS flow 0.3-1.2 against 0.06-1.0 px), so key-frames landed on shakes, not
            actions; with a still camera 99 % of key-frame pairs span exactly one action.
        dominance: Probability that an action belongs to the clip's class family.
    """

    size: int = 96
    fps: int = 24
    actions: tuple[int, int] = (3, 5)
    transition: tuple[int, int] = (1, 1)
    idle: tuple[int, int] = (24, 36)
    jitter: int = 0
    dominance: float = 0.75

    def check(self) -> None:
        _check_size(self.size, 4)
        for name in ("actions", "transition", "idle"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise DataError(f"clip {name} must be a range 1 <= low <= high, got {lo}-{hi}")
        if not 1 <= self.fps <= MAX_FPS or self.jitter < 0 or not 0 <= self.dominance <= 1:
            raise DataError(f"clip fps must be from 1 to {MAX_FPS} (the mp4 time base's limit), jitter >= 0 and "
                            f"dominance in [0, 1]; got fps {self.fps}, jitter {self.jitter}, dominance {self.dominance}")


@dataclass
class ClipStep:
    """One action in a clip: the frames ``start``..``end`` (inclusive) animate it."""

    action: Action
    before: Scene
    after: Scene
    start: int
    end: int


@dataclass
class ClipPlan:
    """Everything about a clip except its pixels."""

    id: str
    label: str
    family: str
    initial: Scene
    steps: list[ClipStep]
    n_frames: int
    offsets: list[tuple[int, int]] = field(default_factory=list)

    @property
    def video(self) -> str:
        """The video's path relative to the output folder."""
        return f"{self.label}/{self.id}.mp4"

    def truth(self, spec: ClipSpec) -> dict[str, Any]:
        """The clip's ground-truth row."""
        return {
            "id": self.id,
            "video": self.video,
            "label": self.label,
            "family": self.family,
            "fps": spec.fps,
            "size": spec.size,
            "n_frames": self.n_frames,
            "initial_scene": self.initial.to_json(),
            "actions": [
                {
                    "start": s.start,
                    "end": s.end,
                    "family": s.action.family,
                    "subset": s.action.subset,
                    "action": s.action.to_json(),
                    "text": canonical_text(s.action),
                    "scene_before": s.before.to_json(),
                    "scene_after": s.after.to_json(),
                }
                for s in self.steps
            ],
        }


def plan_clip(index: int, seed: int, spec: ClipSpec) -> ClipPlan:
    """Decide clip ``index``'s scene, actions, timing and camera shake (no rendering)."""
    rng = random.Random(f"worldboot/world/clip/{seed}/{index}")
    family = FAMILIES[index % len(FAMILIES)]  # balanced classes
    n = rng.randint(*spec.actions)
    others = [f for f in FAMILIES if f != family]
    fams = [family if rng.random() < spec.dominance else rng.choice(others) for _ in range(n)]
    while fams.count(family) * 2 <= n:  # the class family must be the majority
        fams[rng.choice([i for i, f in enumerate(fams) if f != family])] = family
    scene, _ = sample_pair(rng, family)
    initial, steps = scene, []
    t = rng.randint(*spec.idle)
    for fam in fams:
        action = sample_action(scene, fam, rng)
        for alt in [family, *rng.sample(others, len(others))]:
            if action is not None:
                break
            action = sample_action(scene, alt, rng)
        if action is None:  # pragma: no cover - every scene allows some move or recolouring
            break
        duration = rng.randint(*spec.transition)
        after = apply(scene, action)
        steps.append(ClipStep(action, scene, after, t, t + duration - 1))
        scene = after
        t += duration + rng.randint(*spec.idle)
    counts = Counter(s.action.family for s in steps)
    top = max(counts.values())
    label_family = family if counts[family] == top else counts.most_common(1)[0][0]
    # The camera wanders by a pixel at a time, never farther than the margin around large objects.
    amp = min(spec.jitter, max_jitter(spec.size))
    offsets, dx, dy = [], 0, 0
    for _ in range(t):
        if rng.random() < 0.3:
            dx = max(-amp, min(amp, dx + rng.choice((-1, 1))))
        if rng.random() < 0.3:
            dy = max(-amp, min(amp, dy + rng.choice((-1, 1))))
        offsets.append((dx, dy))
    return ClipPlan(f"clip_{index:05d}", CLIP_CLASSES[label_family], label_family, initial, steps, t, offsets)


def max_jitter(size: int, grid: int = 4) -> int:
    """The camera shake (pixels) that keeps every object inside the image: the gap between a
    large object and its cell's border."""
    cell = size / grid
    return int(round(cell) - extent("large", cell)) // 2


def _ease(u: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * u)


def transition_poses(step: ClipStep, u: float, size: int) -> list:
    """The poses a fraction ``u`` (0..1) through ``step``; the acted-on object is drawn last."""
    cell = size / step.before.grid
    ref_before, ref_after = acted_on(step.action)
    poses = [object_pose(o, cell) for o in step.before.objects if o.ref != ref_before]
    p0 = object_pose(step.before.find(ref_before), cell) if ref_before else None
    p1 = object_pose(step.after.find(ref_after), cell) if ref_after else None
    if p0 is None:  # added: grows from nothing
        p0 = replace(p1, ext=0.0)
    if p1 is None:  # removed: shrinks to nothing
        p1 = replace(p0, ext=0.0)
    return poses + [p0.lerp(p1, _ease(u))]


def clip_frames(plan: ClipPlan, spec: ClipSpec) -> Iterator[np.ndarray]:
    """The clip's frames as RGB uint8 arrays, in order."""
    cell = spec.size / plan.initial.grid
    scene, steps = plan.initial, list(plan.steps)
    for f in range(plan.n_frames):
        while steps and f > steps[0].end:
            scene = steps.pop(0).after
        if steps and f >= steps[0].start:
            step = steps[0]
            poses = transition_poses(step, (f - step.start + 1) / (step.end - step.start + 1), spec.size)
        else:
            poses = [object_pose(o, cell) for o in scene.objects]
        yield np.asarray(draw_poses(poses, spec.size, plan.offsets[f]))


def write_video(path: Path, frames: Iterator[np.ndarray], fps: int, size: int) -> int:
    """Write RGB frames as an mp4 (codec mp4v) atomically; returns the number of frames."""
    import cv2

    # atomic_path's temporary name is hidden (nothing scanning for videos takes a half-written
    # one) and keeps the .mp4 suffix, from which OpenCV picks the container.
    with atomic_path(path) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (size, size))
        if not writer.isOpened():
            raise DataError(f"OpenCV cannot write mp4 (mp4v) video to {tmp}")
        n = 0
        try:
            for frame in frames:
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                n += 1
        finally:
            writer.release()
    return n


def generate_clips(
    out_dir: str | os.PathLike[str],
    n_clips: int,
    seed: int = 0,
    size: int = 96,
    fps: int = 24,
    spec: ClipSpec | None = None,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Write ``n_clips`` videos (one folder per class) and their ground truth.

    A rerun into the same folder with the same settings skips the videos already written
    (each is written atomically) and rewrites the ground truth.

    Args:
        out_dir: Output folder; see the module docstring for its layout.
        n_clips: Number of clips (classes are assigned round-robin, so they stay balanced).
        seed: Seed of the whole run.
        size: Frame side in pixels (ignored when ``spec`` is given).
        fps: Frames per second (ignored when ``spec`` is given).
        spec: All clip settings.
        progress: Show a progress bar.

    Returns:
        The ground-truth rows, as written to ``out_dir/ground_truth.jsonl``.

    Raises:
        DataError: For bad settings, or a folder holding clips made with other settings.
    """
    spec = spec or ClipSpec(size=size, fps=fps)
    spec.check()
    out = Path(out_dir)
    settings = {"seed": seed, **asdict(spec)}
    settings_path = out / CLIP_SETTINGS
    # Every clip of the folder, for the checks below (a run killed mid-clip leaves only a hidden
    # temporary name, which visible_files leaves out).
    made = visible_files(out, (".mp4",)) if out.is_dir() else []
    if settings_path.is_file() and made:
        old = json.loads(settings_path.read_text(encoding="utf-8"))
        if json.loads(json.dumps(settings)) != old:
            raise DataError(
                f"{out} holds clips made with other settings ({settings_path}); choose a new --out"
            )
    if len(made) > n_clips:
        raise DataError(f"{out} holds {len(made)} clips, more than the {n_clips} asked for: the ground truth would "
                        f"leave {len(made) - n_clips} out; ask for at least {len(made)} or choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(settings_path, json.dumps(settings, indent=2) + "\n")
    rows = []
    with progress_bar(None, progress) as bar:
        task = bar.add_task("clips", total=n_clips)
        for i in range(n_clips):
            plan = plan_clip(i, seed, spec)
            path = out / plan.video
            if not path.is_file():
                write_video(path, clip_frames(plan, spec), spec.fps, spec.size)
            rows.append(plan.truth(spec))
            bar.advance(task)
    write_atomic(out / GROUND_TRUTH, "".join(json.dumps(r) + "\n" for r in rows))
    return rows


def read_clip_truth(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read ``ground_truth.jsonl`` (the folder or the file).

    Raises:
        DataError: When it is missing or a line is not JSON (naming the line).
    """
    path = Path(path)
    if path.is_dir():
        path = path / GROUND_TRUTH
    if not path.is_file():
        raise DataError(f"clip ground truth not found: {path}")
    return [row for _, row in iter_jsonl(path, Problems(strict=True))]
