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
