"""One batch of ``worldboot generate``: the unit a local run loops over and a Ray Data actor runs.

:func:`predict_batch` checks each sample (its action fits the model, its source opens),
predicts every repeat that lacks it and writes the PNGs and codes; it returns the rows for the
caller to append, so the driver alone writes ``predictions.jsonl`` whichever engine runs.
:func:`load_models_job` and :func:`predict_job` are the same for a Ray actor (plain data in and
out).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from worldboot.data.schema import Triplet
from worldboot.errors import DataError
from worldboot.infer.outputs import write_prediction
from worldboot.infer.predict import load_models, make_generator, predict, sample_seed
from worldboot.models.backbone import sequence_problem


def predict_batch(
    world: Any,
    verifier: Any,
    batch: list[Triplet],
    cfg: Any,
    folders: list[Path],
    done: list[set[str]],
    record: dict[str, Any],
) -> tuple[list[list[dict[str, Any]]], list[tuple[str, str]]]:
    """Predict ``batch`` for every repeat folder whose ``done`` ids lack a sample.

    Args:
        world: The world model.
        verifier: The CDM verifier, or None.
        batch: The samples, in the run's batch order.
        cfg: The run's :class:`~worldboot.infer.config.GenerateConfig`.
        folders: One output folder per repeat.
        done: Per repeat, the ids already predicted.
        record: Fields every row carries (sampling, best_of, world, verifier...).

    Returns:
        Per repeat, the rows written (PNGs and codes on disk), and ``(sample id, problem)``
        for samples skipped (an action too long for the model, a source that does not open).
    """
    from worldboot.images import open_image

    problems: list[tuple[str, str]] = []
    ready, images = [], []
    for t in batch:
        too_long = sequence_problem(world, t.action)  # refused before any compute
        if too_long:
            problems.append((t.id, too_long))
            continue
        try:
            images.append(open_image(t.source))
        except DataError as err:
            problems.append((t.id, f"unreadable source: {err}"))
            continue
        ready.append(t)
    rows: list[list[dict[str, Any]]] = [[] for _ in folders]
    if not ready:
        return rows, problems
    sources = world.encode_images(images).codes
    for k, folder in enumerate(folders):
        idx = [i for i, t in enumerate(ready) if t.id not in done[k]]
        if not idx:
            continue
        seeds = [sample_seed(cfg.seed + k, ready[i].id) for i in idx]
        preds = predict(
            world,
            [sources[i] for i in idx],
            [ready[i].action for i in idx],
            cfg.best_of,
            cfg.sampling,
            [make_generator(s, world.device) for s in seeds],
            verifier,
            [images[i] for i in idx],
        )
        rows[k] = [
            write_prediction(folder, ready[i], p, sources[i], s, k, cfg, record)
            for i, p, s in zip(idx, preds, seeds, strict=True)
        ]
    return rows, problems


def load_models_job(cfg: Any) -> tuple[Any, Any, Any]:
    """A Ray actor's world model and verifier (on its GPU when it reserved one), and the run's
    :class:`~worldboot.infer.config.GenerateConfig`."""
    import torch

    world, verifier = load_models(cfg, torch.device("cuda") if torch.cuda.is_available() else None)
    return world, verifier, cfg


def predict_job(models: tuple[Any, Any, Any], job: dict[str, Any]) -> dict[str, Any]:
    """One batch on a Ray actor: :func:`predict_batch` with plain data in and out."""
    world, verifier, cfg = models
    batch = [Triplet(**t) for t in job["batch"]]
    rows, problems = predict_batch(
        world, verifier, batch, cfg, [Path(f) for f in job["folders"]], [set(d) for d in job["done"]], job["record"]
    )
    return {"rows": rows, "problems": problems}
