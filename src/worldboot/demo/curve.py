"""The learning curve: transition success against training examples seen, for the CDM and for
C-FT, both from the zero-shot base (the paper's Section 2 argument, that a dynamics model is
easier to learn than a world model, made measurable on one scale).

Each point is a snapshot the training run wrote (``snapshot_steps``); step 0 is the base. The
CDM's point: its greedy text for each test triplet, applied by the world's rules
(:func:`~worldboot.world.transition.text_transition`); C-FT's: one sample at temperature 1 per
test triplet, parsed (:func:`~worldboot.world.transition.image_transition`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worldboot.demo.actions import describe


def snapshot_steps(max_steps: int, points: int) -> list[int]:
    """``points - 1`` evenly spaced steps before ``max_steps`` (the final model is the last point)."""
    return sorted({round(max_steps * i / points) for i in range(1, points)} - {0, max_steps})


def cdm_point(bb: Any, test: list[Any]) -> float:
    """The share of test triplets whose CDM text leads from the source to the target scene."""
    from worldboot.world.scene import Scene
    from worldboot.world.transition import text_transition

    texts = describe(bb, test)
    hits = [text_transition(Scene.from_json(t.meta["source_scene"]), texts[t.id], Scene.from_json(t.meta["target_scene"]))
            for t in test]
    return sum(hits) / len(hits)


def world_point(bb: Any, test: list[Any], seed: int) -> float:
    """The share of test triplets where one sample of world model ``bb`` (temperature 1) parses to
    the target scene."""
    from worldboot.images import open_image
    from worldboot.infer.predict import make_generator, predict, sample_seed
    from worldboot.world.scene import Scene
    from worldboot.world.transition import image_transition

    hits = []
    for start in range(0, len(test), 16):
        chunk = test[start : start + 16]
        codes = bb.encode_images([open_image(t.source) for t in chunk]).codes
        gens = [make_generator(sample_seed(seed, t.id), bb.device) for t in chunk]
        for t, p in zip(chunk, predict(bb, list(codes), [t.action for t in chunk], generators=gens), strict=True):
            hits.append(image_transition(p.images[0], Scene.from_json(t.meta["target_scene"])))
    return sum(hits) / len(hits)


def measure_curve(base: str | Path, runs: dict[str, tuple[Path, int, int]], test: list[Any], seed: int) -> dict[str, Any]:
    """Per model (``CDM`` or a world model), ``[(examples seen, transition success)]`` from the
    base (0 examples) through each snapshot to the final model.

    Args:
        base: The zero-shot base.
        runs: Model name -> (its run folder, its steps, its batch size).
        test: The test triplets.
        seed: Sampling seed of the world models' samples.
    """
    from worldboot.models import load_backbone

    base_bb = load_backbone(base)
    out: dict[str, Any] = {}
    for name, (run, steps, batch) in runs.items():
        point = cdm_point if name == "CDM" else (lambda bb, t: world_point(bb, t, seed))
        snaps = sorted((run / "snapshots").glob("step-*"))
        curve = [(0, point(base_bb, test))]
        curve += [(int(s.name.split("-")[1]) * batch, point(load_backbone(s), test)) for s in snaps]
        curve.append((steps * batch, point(load_backbone(run), test)))
        out[name] = curve
    return out


def plot_curve(curves: dict[str, Any], path: Path) -> None:
    """The learning-curve figure: one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, points in curves.items():
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, marker="o", label=f"{name} ({'its text applied' if name == 'CDM' else 'its image parsed'})")
    ax.set_xlabel("training examples seen")
    # Engineering notation ("50k", "200k"): plain tick labels run together past 100000.
    ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter(sep=""))
    ax.set_ylabel("transition success")
    ax.set_ylim(0, 1)
    ax.set_title("Learning curves from the zero-shot base", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
