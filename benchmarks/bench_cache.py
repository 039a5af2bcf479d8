"""One training epoch's data: read from the token cache vs encode images on the fly.

Target: reading codes and recognition weights from the cache is at least 5x faster than opening
the images and running the VQ encoder every epoch, with the tiny backbone (64-px images, so the
encoder is as cheap as it gets; with Anole's 512-px encoder the gap is far wider).

    python benchmarks/bench_cache.py [--triplets 48] [--batch-size 16] [--verbose]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from worldboot.data.cache import CachedTripletDataset, recognition_weights
from worldboot.data.schema import Triplet
from worldboot.data.tokenize import build_cache
from worldboot.images import open_image
from worldboot.models.tiny import build_tiny_chameleon
from worldboot.progress import VERBOSE_HELP, quiet_libraries

TARGET = 5.0


def make_chains(folder: Path, n: int) -> list[Triplet]:
    """AURORA-like chains of 4 turns over 256x256 JPEGs (each turn's output is the next input)."""
    rng = np.random.default_rng(0)
    triplets: list[Triplet] = []
    chain: list[str] = []
    for i in range(n):
        if i % 4 == 0:
            chain = []
            first = folder / f"{i}-0.jpg"
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(first, quality=90)
            chain.append(str(first))
        nxt = folder / f"{i}-1.jpg"
        Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(nxt, quality=90)
        triplets.append(Triplet(f"t{i}", "bench", chain[-1], f"action {i}", str(nxt)))
        chain.append(str(nxt))
    return triplets


def epoch_from_cache(cache_dir: Path, batch_size: int) -> int:
    """Read every triplet's codes and weights through the Dataset, as training does."""
    seen = 0
    loader = DataLoader(CachedTripletDataset(cache_dir), batch_size=batch_size, num_workers=0)
    for batch in loader:
        seen += batch["target_codes"].shape[0]
    return seen


def epoch_on_the_fly(backbone, triplets: list[Triplet], batch_size: int) -> int:
    """Open and encode source and target images for every batch, then compute the weights."""
    seen = 0
    for i in range(0, len(triplets), batch_size):
        part = triplets[i : i + batch_size]
        images = [open_image(t.source) for t in part] + [open_image(t.target) for t in part]
        enc = backbone.encode_images(images)
        n = len(part)
        weights = recognition_weights(enc.features[:n], enc.features[n:])
        torch.stack([enc.codes[:n], enc.codes[n:]])
        seen += weights.shape[0]
    return seen


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--triplets", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="timings of the cached epoch (best kept)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    args = parser.parse_args()
    if not args.verbose:  # the worldboot command's quiet console
        quiet_libraries()
    torch.manual_seed(0)
    backbone = build_tiny_chameleon()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        triplets = make_chains(folder, args.triplets)
        start = time.perf_counter()
        build_cache(triplets, backbone, folder / "cache", batch_size=args.batch_size, progress=False)
        build_s = time.perf_counter() - start
        assert epoch_from_cache(folder / "cache", args.batch_size) == len(triplets)
        cached = best_of(lambda: epoch_from_cache(folder / "cache", args.batch_size), args.repeats)
        # The live epoch is long enough to time once (after a warm-up batch).
        epoch_on_the_fly(backbone, triplets[: args.batch_size], args.batch_size)
        fly = best_of(lambda: epoch_on_the_fly(backbone, triplets, args.batch_size), 1)
    ratio = fly / cached
    n = len(triplets)
    print(f"triplets: {n}, batch size {args.batch_size}, tiny backbone (L={backbone.image_seq_len})")
    print(f"build cache once:      {build_s:8.3f} s")
    print(f"epoch from cache:      {cached:8.3f} s  ({1e3 * cached / n:.2f} ms/triplet)")
    print(f"epoch encoding live:   {fly:8.3f} s  ({1e3 * fly / n:.2f} ms/triplet)")
    print(
        f"ratio (live / cache):  {ratio:8.1f}x  (target >= {TARGET:.0f}x: {'met' if ratio >= TARGET else 'NOT met'})"
    )
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
