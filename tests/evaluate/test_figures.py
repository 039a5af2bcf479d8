"""Figure 3: recognition weights drawn from a token cache; the weights concentrate where things change."""

from __future__ import annotations

import torch
from PIL import Image

from helpers import square_triplets
from worldboot.cli import main


def test_figure_weights_from_cache(tiny, tmp_path):
    from worldboot.data.cache import TokenCache
    from worldboot.data.tokenize import build_cache

    triplets = square_triplets(tmp_path / "sq", 4, seed=0)
    build_cache(triplets, tiny, tmp_path / "cache", progress=False)
    out = tmp_path / "fig3.png"
    assert main(["figures", "weights", str(tmp_path / "cache"), "--out", str(out), "--n", "3"]) == 0
    with Image.open(out) as img:
        assert img.width > 300 and img.height > 300
    # The weights peak where the image changed: on the square's old or new place (8-px tokens).
    import numpy as np

    cache = TokenCache(tmp_path / "cache")
    for t in triplets:
        w = cache.weights(t.id).view(8, 8)
        assert torch.isfinite(w).all() and float(w.min()) >= 0
        diff = np.abs(np.asarray(Image.open(t.source), float) - np.asarray(Image.open(t.target), float)).sum(-1)
        changed = diff.reshape(8, 8, 8, 8).sum(axis=(1, 3)) > 0  # tokens whose pixels changed
        grown = changed | np.roll(changed, 1, 0) | np.roll(changed, -1, 0) | np.roll(changed, 1, 1) | np.roll(changed, -1, 1)
        r, c = divmod(int(w.argmax()), 8)
        assert grown[r, c], (t.id, r, c)
        assert float(w[torch.from_numpy(changed)].mean()) > float(w[torch.from_numpy(~grown)].mean())
    assert main(["figures", "weights", str(tmp_path / "cache"), "--ids", "nope", "--out", str(out)]) == 2
