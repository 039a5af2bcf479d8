"""Small data makers shared by tests (not fixtures: plain functions with explicit seeds)."""

from __future__ import annotations

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
