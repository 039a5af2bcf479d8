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

Layout, as :func:`~worldboot.world.gen.generate_triplets` writes::

    OUT/manifest.jsonl                    one Triplet per line
    OUT/images/<family>/<id>-source.png   the clip's first frame
    OUT/images/<family>/<id>-target.png   its last frame
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from worldboot.data.schema import Triplet, write_manifest
from worldboot.errors import DataError
from worldboot.progress import progress_bar
from worldboot.world.gen import MANIFEST, ClipSpec, _save_png, plan_clip
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
    progress: bool = False,
) -> list[Triplet]:
    """Write ``n_per_subset`` first/last-frame samples per action family.

    Args:
        out_dir: Output folder (created).
        n_per_subset: Samples per family.
        seed: Seed of the set (sample ``i`` of a family draws from its own stream).
        size: Frame side in pixels (the clips' 96 by default; the tokenizer resizes).
        exclude: Transition keys (:func:`transition_key`) never to produce.
        progress: Show a progress bar.

    Returns:
        The samples, as written to ``out_dir/manifest.jsonl``.
    """
    if n_per_subset < 0:
        raise DataError(f"n_per_subset must be >= 0, got {n_per_subset}")
    spec = ClipSpec(size=size, actions=(1, 1), dominance=1.0)
    spec.check()
    out = Path(out_dir)
    samples: list[Triplet] = []
    seen = set(exclude)  # and no transition twice in the set
    with progress_bar(None, progress) as bar:
        task = bar.add_task("recognition", total=n_per_subset * len(FAMILIES))
        for f, family in enumerate(FAMILIES):
            for i in range(n_per_subset):
                for attempt in range(100):
                    # plan_clip's class is FAMILIES[index % 5]: these indices give this family.
                    index = ((i * 100 + attempt) * len(FAMILIES)) + f
                    plan = plan_clip(index, seed, spec)
                    step = plan.steps[0]
                    key = transition_key(step.before, step.after)
                    if step.action.family == family and key not in seen:
                        seen.add(key)
                        break
                else:  # pragma: no cover - the world has far more transitions than any set
                    raise DataError(f"no new {family} transition after 100 draws (sample {i})")
                sid = f"recognition-{family}-{i:06d}"
                src = out / "images" / family / f"{sid}-source.png"
                tgt = out / "images" / family / f"{sid}-target.png"
                _save_png(render(step.before, size, plan.offsets[0]), src)
                _save_png(render(step.after, size, plan.offsets[-1]), tgt)
                meta = {"action": step.action.to_json(), "canonical": canonical_text(step.action), "template": 0,
                        "source_scene": step.before.to_json(), "target_scene": step.after.to_json(),
                        "size": size, "seed": seed, "clip": plan.id}
                samples.append(Triplet(sid, SUBSETS[family], str(src), action_text(step.action, 0), str(tgt), meta))
                bar.advance(task)
    write_manifest(out / MANIFEST, samples)
    return samples


__all__ = ["generate_recognition", "transition_key", "triplet_keys"]
