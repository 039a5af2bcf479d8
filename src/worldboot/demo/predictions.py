"""The demo's predictions beside the world models' own: the true targets through the tokenizer
(the ceiling row), and transition success of every model's candidates (their images parsed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from worldboot.demo.config import CEILING
from worldboot.demo.report import prediction_path


def add_transitions(out: Path, test_triplets: Sequence[Any], judged: dict[str, list[dict[str, Any]]]) -> None:
    """Per model, test triplet and candidate of the demo run in ``out``, whether the image parses
    to the target scene (``transition``: the scale the CDM's texts are judged on too)."""
    from worldboot.world.scene import Scene
    from worldboot.world.transition import image_transition

    test = {t.id: t for t in test_triplets}
    for name, rows in judged.items():
        for r in rows:
            target = Scene.from_json(test[r["id"]].meta["target_scene"])
            if name == "Copy":
                paths = [Path(test[r["id"]].source)]
            elif name == CEILING:  # write_ceiling's files
                paths = [out / "predictions" / "ceiling" / f"{r['id']}.png"]
            elif len(r["es"]) == 1:
                paths = [prediction_path(out, name, r["id"], None)]
            else:
                paths = [prediction_path(out, name, r["id"], i) for i in range(len(r["es"]))]
            r["transition"] = [float(p.is_file() and image_transition(p, target)) for p in paths]


def write_ceiling(base_dir: str | Path, test: Sequence[Any], folder: Path) -> Path:
    """The true targets through the base's tokenizer (encode, decode) as ``<id>.png``: what a
    world model that wrote exactly the target's tokens scores. Far below 10, the tokenizer
    limits the scores; far above the world models, their learning does."""
    from worldboot.images import open_image
    from worldboot.models import load_backbone

    base = load_backbone(base_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(test), 16):
        chunk = test[start : start + 16]
        decoded = base.decode_codes(base.encode_images([open_image(t.target) for t in chunk]).codes)
        for t, img in zip(chunk, decoded, strict=True):
            img.save(folder / f"{t.id}.png")
    return folder
