"""The pre-tokenised cache: dedup by content, Eq. 2 weights, skips, fingerprint checks, resume."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from helpers import f32_atol
from worldboot.data.cache import CachedTripletDataset, TokenCache, recognition_weights
from worldboot.data.schema import Problems, Triplet, content_hash, write_manifest
from worldboot.data.tokenize import build_cache
from worldboot.errors import DataError, ModelError


@pytest.fixture(scope="module")
def backbone(tiny_dir: Path):
    from worldboot.models.chameleon import load_chameleon

    return load_chameleon(tiny_dir)


class Watched:
    """The real backbone, with its encoder calls counted (and optionally cut short)."""

    def __init__(self, inner, fail_at_call: int | None = None, fingerprint: str | None = None) -> None:
        self.inner, self.fail_at_call, self.fingerprint = inner, fail_at_call, fingerprint
        self.calls, self.images = 0, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def tokenizer_fingerprint(self) -> str:
        return self.fingerprint or self.inner.tokenizer_fingerprint()

    def encode_images(self, images):
        self.calls += 1
        if self.fail_at_call is not None and self.calls >= self.fail_at_call:
            raise KeyboardInterrupt("killed")
        self.images += len(images)
        return self.inner.encode_images(images)


def _noise(path: Path, seed: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture()
def chain(tmp_path: Path) -> tuple[list[Triplet], dict[str, str]]:
    """AURORA-like chains (images reused), a byte copy under another name, and bad triplets."""
    d = tmp_path / "img"
    d.mkdir()
    img = {k: _noise(d / f"{k}.png", i) for i, k in enumerate("ABCDEF")}
    shutil.copy(img["A"], d / "A2.png")
    img["A2"] = str(d / "A2.png")
    (d / "broken.png").write_bytes(b"\x89PNG but not really")
    img["broken"] = str(d / "broken.png")
    T = Triplet
    triplets = [
        T("t1", "kubric", img["A"], "move the cube left", img["B"]),
        T("t2", "kubric", img["B"], "move the cube right", img["C"]),
        T("t3", "something", img["C"], "drop it", img["D"], {"entry": 3}),
        T("t4", "something", img["A2"], "lift it", img["C"]),
        T("t5", "something", img["D"], "no target", None),
        T("t1", "kubric", img["A"], "duplicate id", img["C"]),
        T("t6", "kubric", img["E"], "unreadable target", img["broken"]),
        T("t7", "kubric", img["D"], "push it", img["F"]),
        T("t8", "kubric", img["B"], "missing target", str(d / "missing.png")),
    ]
    return triplets, img


def test_cache_content_weights_and_skips(backbone, chain, tmp_path: Path):
    triplets, img = chain
    watched = Watched(backbone)
    problems, skipped = Problems(), Counter()
    cache = build_cache(
        triplets,
        watched,
        tmp_path / "cache",
        batch_size=2,
        shard_size=2,
        problems=problems,
        skipped=skipped,
        progress=False,
    )
    assert cache.ids == ["t1", "t2", "t3", "t4", "t7"]
    assert skipped == {"no target": 1, "duplicate id": 1, "unreadable image": 2}
    assert sorted(p.reason.split(" (")[0] for p in problems) == [
        "cannot read image",
        "cannot read image",
        "duplicate id",
    ]
    assert {p.file for p in problems if "t6" in p.reason} == {img["broken"]}
    # Six distinct readable images (A and A2 share bytes), each encoded once and stored once.
    assert watched.images == 6
    assert sum(s["images"] for s in cache.index["shards"]) == 6
    assert (
        cache.fingerprint == backbone.tokenizer_fingerprint()
        and cache.image_seq_len == backbone.image_seq_len
    )
    assert cache.index["code_dtype"] == "int16"
    assert (tmp_path / "cache" / "problems.jsonl").read_text().count("\n") == 3

    rec = cache.record("t4")
    assert rec["source_hash"] == content_hash(img["A"]) == cache.record("t1")["source_hash"]
    assert rec["subset"] == "something" and rec["action"] == "lift it"
    assert cache.record("t3")["meta"] == {"entry": 3}

    names = ["A", "B", "C", "D", "E", "F"]
    enc = backbone.encode_images([Image.open(img[k]).convert("RGB") for k in names])
    for i, k in enumerate(names):
        codes = cache.codes(content_hash(img[k]))
        assert codes.dtype == torch.int64 and torch.equal(codes, enc.codes[i])
    feats = dict(zip(names, enc.features, strict=True))
    pairs = {"t1": "AB", "t2": "BC", "t3": "CD", "t4": "AC", "t7": "DF"}
    for tid, (s, t) in pairs.items():
        expected = ((feats[t] - feats[s]) ** 2).sum(-1)
        w = cache.weights(tid)
        assert w.shape == (backbone.image_seq_len,) and w.dtype == torch.float32
        # Features the cache computed in another batch: a relative rounding e of f_s and f_t moves
        # each term of sum (f_t - f_s)^2 by at most 2e (|f_t| + |f_s|)^2, so each side lies within
        # f32_atol(1) x sum (|f_t| + |f_s|)^2 of the exact weights (helpers.f32_atol).
        scale = ((feats[t].abs() + feats[s].abs()) ** 2).sum(-1)
        assert ((w - expected).abs() <= 2 * f32_atol(1.0) * scale).all(), (w - expected).abs().max()
    assert torch.equal(recognition_weights(feats["A"], feats["A"]), torch.zeros(backbone.image_seq_len))

    ds = CachedTripletDataset(cache, ids=["t7", "t1"])
    item = ds[0]
    assert item["id"] == "t7" and item["action"] == "push it" and item["subset"] == "kubric"
    assert torch.equal(item["source_codes"], enc.codes[3]) and torch.equal(item["target_codes"], enc.codes[5])
    batch = next(iter(DataLoader(CachedTripletDataset(tmp_path / "cache"), batch_size=4)))
    assert batch["source_codes"].shape == (4, backbone.image_seq_len) and batch["id"] == [
        "t1",
        "t2",
        "t3",
        "t4",
    ]
    with pytest.raises(DataError, match="no triplet 'nope'"):
        CachedTripletDataset(cache, ids=["t1", "nope"])


def test_cache_refuses_other_backbones_and_other_data(backbone, chain, tmp_path: Path):
    triplets, _ = chain
    out = tmp_path / "cache"
    cache = build_cache(triplets[:3], backbone, out, progress=False)
    other = Watched(backbone, fingerprint="0123456789abcdef")
    with pytest.raises(ModelError, match="fingerprint"):
        build_cache(triplets[:3], other, out, progress=False)
    with pytest.raises(ModelError, match="re-tokenize"):
        cache.check_backbone(other)
    cache.check_backbone(backbone)
    with pytest.raises(DataError, match="holds other triplets"):
        build_cache(triplets[:2], backbone, out, progress=False)
    # Rerunning a finished cache with the same input encodes nothing.
    watched = Watched(backbone)
    assert build_cache(triplets[:3], watched, out, progress=False).ids == ["t1", "t2", "t3"]
    assert watched.calls == 0


def test_missing_and_unfinished_cache_are_clear_errors(backbone, chain, tmp_path: Path):
    with pytest.raises(DataError, match=f"token cache not found: {tmp_path / 'none'}"):
        TokenCache(tmp_path / "none")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no index.json"):
        TokenCache(tmp_path / "empty")
    triplets, _ = chain
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="exists and is not a token cache"):
        build_cache(triplets, backbone, tmp_path / "empty", progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_cache(
            triplets,
            Watched(backbone, fail_at_call=2),
            tmp_path / "part",
            batch_size=2,
            shard_size=1,
            progress=False,
        )
    with pytest.raises(DataError, match=r"unfinished \(1 of 6 shards\)"):
        TokenCache(tmp_path / "part")


def test_damaged_shards_are_one_line_naming_the_file(backbone, chain, tmp_path: Path):
    triplets, _ = chain
    build_cache(triplets, backbone, tmp_path / "c", shard_size=2, progress=False)
    shards = sorted((tmp_path / "c").glob("*.safetensors"))
    data = shards[0].read_bytes()
    shards[0].write_bytes(data[:40])  # a header cut short
    with pytest.raises(DataError, match=rf"token cache shard {shards[0]} is damaged .*tokenize again"):
        TokenCache(tmp_path / "c")
    shards[0].write_bytes(data[: len(data) - 16])  # the header whole, the tensors cut short
    try:
        cache = TokenCache(tmp_path / "c")
    except DataError as err:
        assert str(shards[0]) in str(err)
    else:
        with pytest.raises(DataError, match=r"is damaged"):
            for triplet_id in cache.ids:
                cache.weights(triplet_id)


def _content(cache: TokenCache) -> tuple:
    hashes = sorted({r[k] for r in cache.records for k in ("source_hash", "target_hash")})
    return (
        cache.records,
        [cache.codes(h) for h in hashes],
        [cache.weights(i) for i in cache.ids],
        {k: v for k, v in cache.index.items()},
    )


def _assert_same(a: TokenCache, b: TokenCache) -> None:
    ra, ca, wa, ia = _content(a)
    rb, cb, wb, ib = _content(b)
    assert ra == rb and ia == ib
    assert all(torch.equal(x, y) for x, y in zip(ca, cb, strict=True))
    assert all(torch.equal(x, y) for x, y in zip(wa, wb, strict=True))  # bit for bit


# Image batches are [A, B], [C, D], [E, broken], [F] in order of first use; the plan is
# t1 t2 t3 t4 t6 t7. The run is cut after the shards before t6. The resumed run needs [E, broken],
# [F] and, for t7 (D -> F), D's whole batch [C, D] again: D's features must come from the same
# batch as in a clean run; encoding D beside F (what per-shard batching would do on resume) gives
# other float bits (~1e-6 apart), which the bit-for-bit comparison catches.
@pytest.mark.parametrize("shard_size, done", [(1, 4), (2, 2)])
def test_interrupted_run_resumes_to_the_clean_result(
    backbone, chain, tmp_path: Path, shard_size: int, done: int
):
    triplets, _ = chain
    clean = build_cache(
        triplets, backbone, tmp_path / "clean", batch_size=2, shard_size=shard_size, progress=False
    )

    def stop(k: int, n: int) -> None:
        if k == done - 1:
            raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        build_cache(
            triplets,
            backbone,
            tmp_path / "cut",
            batch_size=2,
            shard_size=shard_size,
            progress=False,
            on_shard=stop,
        )
    index = json.loads((tmp_path / "cut" / "index.json").read_text())
    assert [s["file"] for s in index["shards"]] == [f"shard-0000{k}.safetensors" for k in range(done)]
    kept = (tmp_path / "cut" / "shard-00000.safetensors").stat().st_mtime_ns
    (tmp_path / "cut" / f".shard-0000{done}.safetensors.tmp999").write_bytes(b"half a shard")
    resumed = Watched(backbone)
    # Other batch/shard sizes are ignored on resume: the cache keeps the ones it started with.
    cache = build_cache(triplets, resumed, tmp_path / "cut", batch_size=7, shard_size=3, progress=False)
    _assert_same(cache, clean)
    assert (tmp_path / "cut" / "shard-00000.safetensors").stat().st_mtime_ns == kept
    assert not list((tmp_path / "cut").glob(".*tmp*"))
    assert resumed.images == 4  # E, C and D, F


@pytest.mark.slow
def test_killed_process_resumes_to_the_clean_result(backbone, tiny_dir: Path, chain, tmp_path: Path):
    """SIGKILL after two shards: no cleanup runs, yet the rerun completes the same cache."""
    triplets, _ = chain
    manifest = tmp_path / "m.jsonl"
    write_manifest(manifest, triplets)
    script = textwrap.dedent(
        """
        import os, signal, sys
        from worldboot.data.tokenize import build_cache
        from worldboot.data.schema import read_manifest
        from worldboot.models import load_backbone

        def kill(k, n):
            if k == 1:
                os.kill(os.getpid(), signal.SIGKILL)

        build_cache(read_manifest(sys.argv[2]), load_backbone(sys.argv[1]), sys.argv[3],
                    batch_size=2, shard_size=1, progress=False, on_shard=kill)
        """
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_dir), str(manifest), str(tmp_path / "killed")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr
    assert len(json.loads((tmp_path / "killed" / "index.json").read_text())["shards"]) == 2
    from worldboot.data.schema import read_manifest

    loaded = read_manifest(manifest)  # the same triplets the killed process read
    resumed = build_cache(loaded, backbone, tmp_path / "killed", progress=False)
    clean = build_cache(loaded, backbone, tmp_path / "clean", batch_size=2, shard_size=1, progress=False)
    _assert_same(resumed, clean)
