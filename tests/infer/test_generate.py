"""``worldboot generate``: exact-length predictions, seeds independent of batching, shards, resume,
problems, repeats, presets, the CLI (tiny random model: the images are noise, the files are real)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from helpers import square_triplets, undecodable_png
from worldboot.cli import main
from worldboot.config import load_config
from worldboot.errors import ConfigError, DataError
from worldboot.infer.generate import GenerateConfig, run_generate
from worldboot.infer.outputs import file_stem
from worldboot.infer.predict import predict, sample_seed
from worldboot.infer.verify import Verifier
from worldboot.runs import read_rows, shard_of

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("squares")
    square_triplets(root, 5, seed=3)
    return root / "manifest.jsonl"


def _cfg(manifest, out, tiny_dir, **kw) -> GenerateConfig:
    cfg = GenerateConfig(manifest=str(manifest), out=str(out), world=str(tiny_dir), batch_size=2)
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def _codes(folder: Path) -> dict[str, torch.Tensor]:
    return {r["id"]: load_file(str(folder / r["codes"]))["candidates"] for r in read_rows(folder / "predictions.jsonl")}


def test_every_prediction_has_exactly_l_codes_and_decodes(tmp_path, data, tiny_dir, world):
    summary = run_generate(_cfg(data, tmp_path / "pred", tiny_dir), world=world, progress=False)
    assert (summary.samples, summary.predicted, summary.problems) == (5, 5, 0)
    out = tmp_path / "pred"
    rows = read_rows(out / "predictions.jsonl")
    assert [r["id"] for r in rows] == [f"sq{i:04d}" for i in range(5)]  # manifest order
    for row in rows:
        assert {"id", "image", "seed", "subset", "action", "source", "sampling", "world"} <= row.keys()
        assert "candidates" not in row and row["verifier"] is None
        assert row["seed"] == sample_seed(0, row["id"])
        tensors = load_file(str(out / row["codes"]))
        codes = tensors["candidates"]
        assert codes.shape == (1, world.image_seq_len)
        assert int(codes.min()) >= 0 and int(codes.max()) < world.codebook_size
        with Image.open(out / row["image"]) as img:
            assert img.format == "PNG" and img.size == (world.image_size, world.image_size)
            # The PNG is the decoding of the stored codes.
            assert np.array_equal(np.asarray(img), np.asarray(world.decode_codes(codes)[0]))
        # The source codes are the world model's encoding of the source image.
        from worldboot.images import open_image

        assert torch.equal(tensors["source"], world.encode_images([open_image(row["source"])]).codes[0])
    assert (out / "config.yaml").is_file() and json.loads((out / "meta.json").read_text())["status"] == "ok"
    assert load_config(GenerateConfig, out / "config.yaml").world == str(tiny_dir)
    assert (out / "problems.jsonl").read_text() == ""


def test_predict_is_independent_of_the_batch_and_guidance_runs(world):
    from worldboot.infer.predict import make_generator
    from worldboot.models.backbone import SamplingConfig

    src = torch.randint(0, world.codebook_size, (3, world.image_seq_len), generator=torch.Generator().manual_seed(0))
    actions = ["move the red cube left", "open the box", "pull the yellow box closer to the camera"]
    together = predict(world, list(src), actions, 2, generators=[make_generator(s) for s in (1, 2, 3)])
    alone = predict(world, [src[2]], actions[2:], 2, generators=[make_generator(3)])
    assert torch.equal(together[2].codes, alone[0].codes)
    assert not torch.equal(together[0].codes, together[1].codes)
    guided = predict(
        world, [src[0]], actions[:1], 2, SamplingConfig(guidance_scale=3.0, top_k=50), [make_generator(1)]
    )[0]
    assert guided.codes.shape == (2, world.image_seq_len) and len(guided.images) == 2
    assert not torch.equal(guided.codes, together[0].codes)


def test_best_of_one_equals_plain_generation(tmp_path, data, tiny_dir, world):
    plain = tmp_path / "plain"
    run_generate(_cfg(data, plain, tiny_dir, seed=5), world=world, progress=False)
    cfg = _cfg(data, tmp_path / "bo1", tiny_dir, seed=5)
    cfg.verifier.path = str(tiny_dir)
    run_generate(cfg, world=world, verifier=Verifier(world, world), progress=False)
    a, b = read_rows(plain / "predictions.jsonl"), read_rows(tmp_path / "bo1" / "predictions.jsonl")
    assert [r["seed"] for r in a] == [r["seed"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert rb["chosen"] == 0 and len(rb["candidates"]) == 1 and rb["candidates"][0]["score"] < 0
        assert (plain / ra["image"]).read_bytes() == (tmp_path / "bo1" / rb["image"]).read_bytes()
    assert all(torch.equal(x, y) for x, y in zip(_codes(plain).values(), _codes(tmp_path / "bo1").values(),
                                                  strict=True))


def test_two_shards_merged_equal_one_run_whatever_the_batch(tmp_path, data, tiny_dir, world):
    one = tmp_path / "one"
    run_generate(_cfg(data, one, tiny_dir, best_of=2, batch_size=3), world=world, progress=False)
    two = tmp_path / "two"
    first = run_generate(_cfg(data, two, tiny_dir, best_of=2, batch_size=1), shard=(0, 2), world=world,
                         progress=False)
    ids = [r["id"] for r in read_rows(one / "predictions.jsonl")]
    owned = [sum(shard_of(i, 2) == k for i in ids) for k in (0, 1)]
    assert first.shard_samples == owned[0] > 0 and not first.merged
    assert not (two / "predictions.jsonl").exists() and (two / "shards" / "0-of-2.jsonl").is_file()
    # A one-way run on a half-sharded folder folds the shard in and predicts only the rest.
    mixed = tmp_path / "mixed"
    shutil.copytree(two, mixed)
    rest = run_generate(_cfg(data, mixed, tiny_dir, best_of=2), world=world, progress=False)
    assert (rest.done_before, rest.predicted) == tuple(owned)
    assert (mixed / "predictions.jsonl").read_text() == (one / "predictions.jsonl").read_text()
    second = run_generate(_cfg(data, two, tiny_dir, best_of=2, batch_size=2), shard=(1, 2), world=world,
                          progress=False)
    assert second.shard_samples == owned[1] > 0 and second.merged
    assert (one / "predictions.jsonl").read_text() == (two / "predictions.jsonl").read_text()
    assert not list((two / "shards").glob("*.jsonl"))
    for row in read_rows(one / "predictions.jsonl"):
        assert len(row["candidates"]) == 2 and row["chosen"] == 0  # no verifier: the first
        for c in row["candidates"]:
            assert (one / c["image"]).read_bytes() == (two / c["image"]).read_bytes()
    meta = json.loads((two / "meta.json").read_text())
    assert meta["shards"] == 2 and meta["status"] == "ok" and len(meta["shard_meta"]) == 2


def test_killed_run_resumes_to_the_same_output_without_duplicates(tmp_path, data, tiny_dir, world):
    clean = tmp_path / "clean"
    run_generate(_cfg(data, clean, tiny_dir), world=world, progress=False)

    def kill(batch, rows):
        if batch == 1:
            raise KeyboardInterrupt

    out = tmp_path / "killed"
    with pytest.raises(KeyboardInterrupt):
        run_generate(_cfg(data, out, tiny_dir), world=world, progress=False, on_batch=kill)
    assert len(read_rows(out / "predictions.jsonl")) == 4
    assert json.loads((out / "meta.json").read_text())["status"] == "failed: KeyboardInterrupt"
    # A kill in the middle of a write leaves half a line (and maybe a temporary PNG).
    with open(out / "predictions.jsonl", "a") as fh:
        fh.write('{"id": "sq0004", "image": "images/sq00')
    (out / "images" / ".sq0004.png.tmp999").write_bytes(b"\x89PNG")
    again = run_generate(_cfg(data, out, tiny_dir), world=world, progress=False)
    assert (again.done_before, again.predicted) == (4, 1)
    assert (out / "predictions.jsonl").read_text() == (clean / "predictions.jsonl").read_text()
    for row in read_rows(clean / "predictions.jsonl"):
        assert (out / row["image"]).read_bytes() == (clean / row["image"]).read_bytes()
    # Nothing left to do: a third run adds nothing.
    assert run_generate(_cfg(data, out, tiny_dir), world=world, progress=False).predicted == 0
    assert len(read_rows(out / "predictions.jsonl")) == 5


def test_resuming_with_other_settings_is_refused(tmp_path, data, tiny_dir, world):
    out = tmp_path / "pred"
    run_generate(_cfg(data, out, tiny_dir, batch_size=5), world=world, progress=False)
    cfg = _cfg(data, out, tiny_dir)
    cfg.sampling.temperature = 0.5
    with pytest.raises(ConfigError, match="sampling.temperature=1.0"):
        run_generate(cfg, world=world, progress=False)
    # The batch size does not change the predictions: resuming with another one is fine.
    assert run_generate(_cfg(data, out, tiny_dir, batch_size=1), world=world, progress=False).predicted == 0


def test_repeats_are_independent_runs(tmp_path, data, tiny_dir, world):
    out = tmp_path / "rep"
    run_generate(_cfg(data, out, tiny_dir, repeats=2, tasks="squares/left"), world=world, progress=False)
    single = tmp_path / "single"
    run_generate(_cfg(data, single, tiny_dir, tasks="squares/left"), world=world, progress=False)
    r0, r1 = read_rows(out / "repeat-0" / "predictions.jsonl"), read_rows(out / "repeat-1" / "predictions.jsonl")
    assert [r["id"] for r in r0] == [r["id"] for r in r1] and r0
    assert all(r["subset"] == "squares/left" for r in r0)
    assert [r["repeat"] for r in r1] == [1] * len(r1)
    assert [r["seed"] for r in r1] == [sample_seed(1, r["id"]) for r in r1]
    # Repeat 0 is the run with the same seed; repeat 1 differs.
    assert (out / "repeat-0" / "predictions.jsonl").read_text() == (single / "predictions.jsonl").read_text()
    c0, c1 = _codes(out / "repeat-0"), _codes(out / "repeat-1")
    assert all(not torch.equal(c0[k], c1[k]) for k in c0)


def _bad_manifest(tmp_path: Path, data: Path) -> Path:
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for r in rows:
        for key in ("source", "target"):
            shutil.copy(data.parent / r[key], tmp_path / r[key])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    lines = [
        json.dumps(rows[0]),
        json.dumps({**rows[1], "id": "missing", "source": "nowhere.png"}),
        json.dumps({**rows[2], "id": "empty", "action": "  "}),
        "{not json",
        json.dumps({**rows[3], "id": "broken", "source": "broken.png"}),
        json.dumps({**rows[4], "id": "no-target", "target": None}),
    ]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_are_reported_with_their_line_and_the_rest_goes_on(tmp_path, data, tiny_dir, world):
    manifest = _bad_manifest(tmp_path, data)
    out = tmp_path / "pred"
    summary = run_generate(_cfg(manifest, out, tiny_dir), world=world, progress=False)
    assert [r["id"] for r in read_rows(out / "predictions.jsonl")] == ["sq0000", "no-target"]
    problems = [json.loads(line) for line in (out / "problems.jsonl").read_text().splitlines()]
    assert summary.problems == len(problems) == 4
    by_line = {p["line"]: p["reason"] for p in problems}
    assert set(by_line) == {2, 3, 4, 5} and all(p["file"] == str(manifest) for p in problems)
    assert "nowhere.png" in by_line[2] and by_line[3] == "empty action"
    assert "malformed JSON" in by_line[4] and "broken.png" in by_line[5]
    with pytest.raises(DataError, match=r"bad.jsonl:3: empty action"):
        run_generate(_cfg(manifest, tmp_path / "strict", tiny_dir, strict=True), world=world, progress=False)


def test_strict_stops_after_the_batchs_finished_predictions_are_written(tmp_path, data, tiny_dir, world):
    """An image that fails only when its pixels are read stops a --strict run at prediction time;
    the rows of its batch already predicted are on disk, and the rerun does not predict them again."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for r in rows[:2]:
        for k in ("source", "target"):
            shutil.copy(data.parent / r[k], tmp_path / Path(r[k]).name)
            r[k] = Path(r[k]).name
    bad = undecodable_png(tmp_path / "broken-pixels.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in [rows[0], {**rows[1], "id": "bad", "source": bad.name}]))
    out = tmp_path / "pred"
    with pytest.raises(DataError, match=r"m.jsonl:2: .*broken-pixels.png"):
        run_generate(_cfg(manifest, out, tiny_dir, strict=True), world=world, progress=False)
    assert [r["id"] for r in read_rows(out / "predictions.jsonl")] == [rows[0]["id"]]
    summary = run_generate(_cfg(manifest, out, tiny_dir), world=world, progress=False)
    assert (summary.predicted, summary.problems) == (0, 1)


def test_aurora_bench_test_json(tmp_path, aurora_bench, tiny_dir, world):
    entries = json.loads((aurora_bench / "test.json").read_text())
    picked = [next(e for e in entries if e["task"] == t) for t in ("something", "kubric")]
    picked.append({"input": picked[0]["input"], "instruction": "wipe the table", "task": "emu"})  # no target
    bench = tmp_path / "test.json"
    bench.write_text(json.dumps(picked))
    out = tmp_path / "pred"
    summary = run_generate(_cfg(bench, out, tiny_dir, root=str(aurora_bench)), world=world, progress=False)
    rows = read_rows(out / "predictions.jsonl")
    assert summary.problems == 0 and [r["id"] for r in rows] == ["something-1", "kubric-2", "emu-3"]
    assert rows[2]["target"] is None
    for r in rows:
        assert Image.open(out / r["image"]).size == (world.image_size, world.image_size)


def test_helpers():
    assert file_stem("kubric-12") == "kubric-12"
    odd = file_stem("world/move/../3")
    assert "/" not in odd and odd != file_stem("world/move/__/3") and not odd.startswith(".")
    assert sample_seed(0, "a") != sample_seed(1, "a") and sample_seed(0, "a") < 2**63


@pytest.mark.parametrize("preset", sorted((ROOT / "configs" / "generate").glob("*.yaml")) +
                         [ROOT / "configs" / "anole7b" / "generate.yaml"], ids=lambda p: p.name)
def test_presets_load(preset):
    from worldboot.infer.rollout import RolloutConfig

    text = preset.read_text()
    assert text.startswith("# worldboot generate ")
    cfg = load_config(GenerateConfig, preset, ["world=w", "manifest=m", "out=o"])
    cfg.validate()
    assert cfg.sampling.temperature == 1.0
    if preset.parent.name == "generate":  # the shared presets also drive rollouts
        load_config(RolloutConfig, preset)


def test_cli_generate_best_of_and_errors(tmp_path, data, tiny_dir, capsys):
    out = tmp_path / "pred"
    args = ["generate", str(data), "--world", str(tiny_dir), "--out", str(out), "--best-of", "2",
            "--verifier", str(tiny_dir), "--verifier-score", "mean", "--seed", "3", "--batch-size", "5",
            "--task", "squares/right", "--no-progress", "sampling.top_k=100"]
    assert main(args) == 0
    rows = read_rows(out / "predictions.jsonl")
    assert rows and all(r["subset"] == "squares/right" for r in rows)
    for r in rows:
        assert r["sampling"]["top_k"] == 100 and r["verifier_score"] == "mean" and r["seed"] == sample_seed(3, r["id"])
        means = [c["mean"] for c in r["candidates"]]
        assert [c["score"] for c in r["candidates"]] == means and r["chosen"] == int(np.argmax(means))
        assert Path(r["world"]) == tiny_dir.resolve()
    assert "predictions now" in capsys.readouterr().err
    # User mistakes: one line, exit 2.
    assert main(["generate", str(data), "--out", str(out)]) == 2
    assert "--world" in capsys.readouterr().err
    assert main(["generate", str(data), "--world", str(tiny_dir), "--out", str(out), "--shard", "2/2"]) == 2
    assert main(["generate", str(data), "--world", str(tiny_dir), "--out", str(out), "sampling.top_p=0"]) == 2
    assert main(["generate", str(tmp_path / "none.jsonl"), "--world", str(tiny_dir), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "none.jsonl" in err
    for verb in (["generate", str(data)], ["rollout", str(tmp_path / "none.png"), "--action", "a"]):
        assert main([*verb, "--world", str(tiny_dir), "--verifier-score", "mean", "--out", str(tmp_path / "v")]) == 2
        assert "--verifier-score ranks a verifier's scores, and this run has none" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.distributed
def test_accelerate_launch_two_processes_merge(tmp_path, data, tiny_dir):
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    env = {**os.environ, "WORLDBOOT_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1"}
    common = ["-m", "worldboot.cli", "generate", str(data), "--world", str(tiny_dir), "--best-of", "2"]
    two = subprocess.run(
        [accelerate, "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp_cpu.yaml"),
         "--main_process_port", str(port), *common, "--out", str(tmp_path / "two")],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert "shard 0/2" in two.stderr and "shard 1/2" in two.stderr
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], capture_output=True, text=True,
                         env=env, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    assert (tmp_path / "one" / "predictions.jsonl").read_text() == (tmp_path / "two" / "predictions.jsonl").read_text()


def test_per_prompt_sampling_follows_the_distribution_and_never_picks_zero_mass():
    # The per-prompt generators draw by inverse CDF (one uniform per row): check it is exact.
    from worldboot.models.sampling import inverse_cdf


    probs = torch.tensor([[0.0, 0.2, 0.0, 0.5, 0.3, 0.0]]).repeat(100_000, 1)
    u = torch.rand(100_000, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    counts = torch.bincount(inverse_cdf(probs, u), minlength=6) / 100_000
    assert counts.tolist() == pytest.approx([0.0, 0.2, 0.0, 0.5, 0.3, 0.0], abs=0.01)
    assert counts[0] == counts[2] == counts[5] == 0
    edges = torch.tensor([[0.0], [0.2], [1.0]], dtype=torch.float64)
    assert inverse_cdf(probs[:3], edges).tolist() == [1, 3, 4]


def test_an_action_longer_than_the_model_takes_is_skipped_and_counted(data, tmp_path, tiny_dir, world):
    """An action too long for any loader (over 2000 characters) is refused as it is read; one
    that loads but does not fit the model's positions is refused by tokenize and generate
    (its line named), which do the rest."""
    from worldboot.data.schema import Problems, read_manifest
    from worldboot.data.tokenize import build_cache

    rows = [json.loads(x) for x in data.read_text().splitlines()]
    rows[1]["action"] = ("push it " * 240).strip()  # 1919 characters: loads, but over 512 tokens
    rows[2]["action"] = ("push it " * 12_500).strip()  # 99,999 characters
    manifest = data.parent / "long.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = Problems()
    assert len(read_manifest(manifest, loaded)) == len(rows) - 1
    assert [(p.line, p.reason) for p in loaded] == [(3, "action of 99999 characters (at most 2000)")]
    out = tmp_path / "pred"
    summary = run_generate(_cfg(manifest, out, tiny_dir), world=world, progress=False)
    assert summary.predicted == len(rows) - 2 and summary.problems == 2
    by_line = {p["line"]: p["reason"] for p in map(json.loads, (out / "problems.jsonl").read_text().splitlines())}
    assert "does not fit the model's 512 positions (an action of 1919 characters)" in by_line[2]
    assert by_line[3].startswith("action of 99999 characters")
    problems = Problems()
    build_cache(read_manifest(manifest), world, tmp_path / "cache", problems=problems, progress=False)
    assert len(problems) == 1 and rows[1]["id"] in problems.items[0].file
    assert "does not fit the model's 512 positions (an action of 1919 characters)" in problems.items[0].reason
