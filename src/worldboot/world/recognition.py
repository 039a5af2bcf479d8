"""An action-recognition set: the first and last frames of labelled clips, each with its action.

The paper's dynamics model (Appendix K) trains on AURORA plus 15K EPIC-Kitchens
action-recognition samples that neither world model sees: first and last frames of a narrated
clip. This is the procedural world's counterpart: each sample is a one-action clip of the
world's video generator (:func:`~worldboot.world.gen.plan_clip`: its scene, its camera shake,
96-pixel frames), of which only the first and the last frame are kept, with the action's text.
The texts are canonical, as EPIC's narrations are short and regular ("open drawer").

Samples never repeat a transition of the sets given as ``exclude`` (the labelled triplets the
world models see, the test triplets), nor one of their own: a sample whose (source scene,
target scene) is taken is drawn again.

``per_source`` samples may share one first frame: from the clip's first scene, one action of
each of ``per_source`` different families, each with its own last frame. The source image is
then written (and tokenized) once for all of them: with 5 a source, 6 images make 5 samples
instead of 10, and the dynamics model sees the same scene turned by different actions.

Layout, as :func:`~worldboot.world.gen.generate_triplets` writes::

    OUT/manifest.jsonl                    one Triplet per line
    OUT/images/<family>/<id>-source.png   the clip's first frame
    OUT/images/<family>/<id>-target.png   its last frame
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path

from worldboot.data.schema import Triplet, write_manifest
from worldboot.errors import DataError
from worldboot.progress import progress_bar
from worldboot.world.actions import apply, sample_action
from worldboot.world.gen import MANIFEST, ClipPlan, ClipSpec, ClipStep, _save_png, plan_clip
from worldboot.world.render import render
from worldboot.world.scene import FAMILIES, SUBSETS, Scene
from worldboot.world.text import action_text, canonical_text


def transition_key(source: Scene | dict, target: Scene | dict) -> str:
    """A transition's identity: its source and target scenes (a triplet's ``meta`` holds both)."""
    as_json = [s.to_json() if isinstance(s, Scene) else s for s in (source, target)]
    return json.dumps(as_json, sort_keys=True)


def triplet_keys(triplets: Iterable[Triplet]) -> set[str]:
    """The transition keys of world triplets (their ``meta`` scenes)."""
    return {transition_key(t.meta["source_scene"], t.meta["target_scene"]) for t in triplets}


def generate_recognition(
    out_dir: str | os.PathLike[str],
    n_per_subset: int,
    seed: int = 0,
    size: int = 96,
    exclude: set[str] | frozenset[str] = frozenset(),
    per_source: int = 1,
    progress: bool = False,
) -> list[Triplet]:
    """Write ``n_per_subset`` first/last-frame samples per action family.

    Args:
        out_dir: Output folder (created).
        n_per_subset: Samples per family.
        seed: Seed of the set (sample ``i`` of a family draws from its own stream).
        size: Frame side in pixels (the clips' 96 by default; the tokenizer resizes).
        exclude: Transition keys (:func:`transition_key`) never to produce.
        per_source: Samples sharing one first frame, each of a different family (1 to the number
            of families); 1 gives every sample its own clip.
        progress: Show a progress bar.

    Returns:
        The samples, as written to ``out_dir/manifest.jsonl``.

    Raises:
        DataError: ``n_per_subset`` is negative or ``per_source`` out of range.
    """
    if n_per_subset < 0:
        raise DataError(f"n_per_subset must be >= 0, got {n_per_subset}")
    if not 1 <= per_source <= len(FAMILIES):
        raise DataError(f"per_source must be between 1 and {len(FAMILIES)} (one action a family), got {per_source}")
    spec = ClipSpec(size=size, actions=(1, 1), dominance=1.0)
    spec.check()
    out = Path(out_dir)
    samples: list[Triplet] = []
    seen = set(exclude)  # and no transition twice in the set
    with progress_bar(None, progress) as bar:
        task = bar.add_task("recognition", total=n_per_subset * len(FAMILIES))
        for group in _groups(n_per_subset, per_source):
            plan, steps = _draw_group(group, seed, spec, seen)
            f0, i0 = group[0]
            src = out / "images" / f0 / f"recognition-{f0}-{i0:06d}-source.png"
            _save_png(render(steps[0].before, size, plan.offsets[0]), src)
            for (family, i), step in zip(group, steps, strict=True):
                sid = f"recognition-{family}-{i:06d}"
                tgt = out / "images" / family / f"{sid}-target.png"
                _save_png(render(step.after, size, plan.offsets[-1]), tgt)
                meta = {"action": step.action.to_json(), "canonical": canonical_text(step.action), "template": 0,
                        "source_scene": step.before.to_json(), "target_scene": step.after.to_json(),
                        "size": size, "seed": seed, "clip": plan.id}
                samples.append(Triplet(sid, SUBSETS[family], str(src), action_text(step.action, 0), str(tgt), meta))
                bar.advance(task)
    write_manifest(out / MANIFEST, samples)
    return samples


def _groups(n_per_subset: int, per_source: int) -> list[list[tuple[str, int]]]:
    """The samples ``(family, i)`` that share a first frame. One a source: family by family, as
    the set was first written; more: the families in turn, ``per_source`` different ones a group."""
    if per_source == 1:
        return [[(family, i)] for family in FAMILIES for i in range(n_per_subset)]
    order = [(FAMILIES[s % len(FAMILIES)], s // len(FAMILIES)) for s in range(n_per_subset * len(FAMILIES))]
    return [order[k : k + per_source] for k in range(0, len(order), per_source)]


def _draw_group(group: list[tuple[str, int]], seed: int, spec: ClipSpec, seen: set[str]) -> tuple[ClipPlan, list[ClipStep]]:
    """A one-action clip of the group's first family, and from its first scene one new transition
    of each other family in the group (added to ``seen``)."""
    f0, i0 = group[0]
    for attempt in range(100):
        # plan_clip's class is FAMILIES[index % 5]: these indices give this family.
        index = ((i0 * 100 + attempt) * len(FAMILIES)) + FAMILIES.index(f0)
        plan = plan_clip(index, seed, spec)
        first = plan.steps[0]
        if first.action.family != f0:
            continue
        rng = random.Random(f"worldboot/world/recognition/{seed}/{index}")
        steps = [first]
        for family, _ in group[1:]:
            action = sample_action(first.before, family, rng)
            if action is None:
                break
            steps.append(ClipStep(action, first.before, apply(first.before, action), first.start, first.end))
        keys = [transition_key(s.before, s.after) for s in steps]
        if len(steps) == len(group) and len(set(keys)) == len(keys) and not seen.intersection(keys):
            seen.update(keys)
            return plan, steps
    # pragma: no cover - the world has far more transitions than any set
    raise DataError(f"no new {f0} transition after 100 draws (sample {i0})")


__all__ = ["generate_recognition", "transition_key", "triplet_keys"]
