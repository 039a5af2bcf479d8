"""Best-of-N with the dynamics model as verifier: the chosen candidate is the argmax of scores that
a separately loaded verifier recomputes from the stored codes; another tokenizer is re-encoded or
refused."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from helpers import f32_atol, square_triplets
from worldboot.cli import main
from worldboot.errors import ModelError
from worldboot.infer.generate import GenerateConfig, run_generate
from worldboot.infer.verify import Verifier, argmax_index
from worldboot.runs import read_rows


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("squares")
    square_triplets(root, 3, seed=5)
    return root / "manifest.jsonl"


@pytest.fixture(scope="module")
def other_dir(tmp_path_factory):
    """A tiny CDM with another image tokenizer (32-px images, another VQ and vocabulary)."""
    from worldboot.models.tiny import TinyChameleonSpec, save_tiny_chameleon

    spec = TinyChameleonSpec(image_size=32, vq_channel_multiplier=[1, 2, 2], seed=1)
    return save_tiny_chameleon(tmp_path_factory.mktemp("other") / "model", spec)


def _recompute(verifier_dir, folder, row, source_key="source", cand_key="candidates"):
    """Scores of a row's candidates by a verifier loaded anew, one candidate at a time."""
    from worldboot.models import load_backbone

    cdm = load_backbone(verifier_dir)
    tensors = load_file(str(folder / row["codes"]))
    totals, means = [], []
    for cand in tensors[cand_key]:
        s = cdm.score([cdm.dynamics_example(tensors[source_key], cand, row["action"])], batch_size=1)
        totals.append(float(s.total[0]))
        means.append(float(s.mean[0]))
    return totals, means, tensors


@pytest.mark.parametrize("kind", ["total", "mean"])
def test_chosen_is_the_argmax_of_independently_recomputed_scores(tmp_path, data, tiny_dir, world, kind):
    cfg = GenerateConfig(manifest=str(data), out=str(tmp_path / "pred"), world=str(tiny_dir), best_of=4,
                         batch_size=2)
    cfg.verifier.path, cfg.verifier.score = str(tiny_dir), kind
    run_generate(cfg, world=world, verifier=Verifier(world, world, score=kind), progress=False)
    out = tmp_path / "pred"
    rows = read_rows(out / "predictions.jsonl")
    assert len(rows) == 3
    for row in rows:
        totals, means, tensors = _recompute(tiny_dir, out, row)
        assert tensors["candidates"].shape == (4, world.image_seq_len)
        # Scored in another batch: totals of one-signed log-probabilities bound them (helpers.f32_atol).
        assert [c["total"] for c in row["candidates"]] == pytest.approx(totals, abs=f32_atol(max(map(abs, totals))))
        assert [c["mean"] for c in row["candidates"]] == pytest.approx(means, abs=f32_atol(max(map(abs, means))))
        wanted = totals if kind == "total" else means
        assert row["chosen"] == max(range(4), key=lambda k: wanted[k]) == int(tensors["chosen"])
        # The prediction is the chosen candidate, and every candidate PNG is its codes decoded.
        assert (out / row["image"]).read_bytes() == (out / row["candidates"][row["chosen"]]["image"]).read_bytes()
        assert len({c["image"] for c in row["candidates"]}) == 4
        assert not row["verifier_reencoded"] and "verifier_source" not in tensors


def test_one_batched_forward_scores_like_one_by_one(world):
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, world.codebook_size, (world.image_seq_len,), generator=gen)
    cands = torch.randint(0, world.codebook_size, (5, world.image_seq_len), generator=gen)
    batches = []
    verifier = Verifier(world, world)
    hook = world.model.register_forward_pre_hook(
        lambda _m, _a, kw: batches.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        scores = verifier.score_candidates(src, cands, "open the box")
    finally:
        hook.remove()
    # The shared <s>, source image and the candidate's begin-image once, then all five
    # candidates with the action together.
    prefix = 1 + (world.image_seq_len + 2) + 1
    assert batches == [(1, prefix), (5, batches[1][1])]
    one = [float(world.score([world.dynamics_example(src, c, "open the box")]).total[0]) for c in cands]
    assert scores.total.tolist() == pytest.approx(one, abs=f32_atol(max(map(abs, one))))  # as above
    assert verifier.choose(scores) == int(torch.tensor(one).argmax())


def test_another_tokenizer_is_reencoded_or_refused(tmp_path, data, tiny_dir, other_dir, world):
    from worldboot.models import load_backbone

    other = load_backbone(other_dir)
    with pytest.raises(ModelError, match="another image tokenizer"):
        Verifier(other, world, on_mismatch="error", path=str(other_dir))
    cfg = GenerateConfig(manifest=str(data), out=str(tmp_path / "pred"), world=str(tiny_dir), best_of=3)
    cfg.verifier.path = str(other_dir)
    verifier = Verifier(other, world)
    assert verifier.reencode
    run_generate(cfg, world=world, verifier=verifier, progress=False)
    out = tmp_path / "pred"
    log = (out / "log.txt").read_text()
    assert "re-encoded" in log
    for row in read_rows(out / "predictions.jsonl"):
        assert row["verifier_reencoded"]
        totals, _, tensors = _recompute(other_dir, out, row, "verifier_source", "verifier_candidates")
        assert tensors["verifier_candidates"].shape == (3, other.image_seq_len)
        # The verifier's codes are its own encoding of the decoded candidates.
        from PIL import Image

        images = [Image.open(out / c["image"]).convert("RGB") for c in row["candidates"]]
        assert torch.equal(other.encode_images(images).codes, tensors["verifier_candidates"])
        assert [c["total"] for c in row["candidates"]] == pytest.approx(totals, abs=f32_atol(max(map(abs, totals))))
        assert row["chosen"] == max(range(3), key=lambda k: totals[k])


def test_cli_mismatched_verifier_refused_in_one_line_or_reencoded(tmp_path, data, tiny_dir, other_dir, capsys):
    code = main(["generate", str(data), "--world", str(tiny_dir), "--out", str(tmp_path / "p"), "--best-of", "2",
                 "--verifier", str(other_dir), "verifier.on_mismatch=error"])
    err = capsys.readouterr().err
    assert code == 2 and "another image tokenizer" in err and "Traceback" not in err
    assert not (tmp_path / "p" / "predictions.jsonl").exists()
    # The default re-encodes, and says so.
    assert main(["generate", str(data), "--world", str(tiny_dir), "--out", str(tmp_path / "q"), "--best-of", "2",
                 "--verifier", str(other_dir), "--task", "squares/left", "--no-progress"]) == 0
    assert "re-encoded" in capsys.readouterr().err
    rows = read_rows(tmp_path / "q" / "predictions.jsonl")
    assert len(rows) == 2 and all(r["verifier_reencoded"] for r in rows)


def test_argmax_index_ignores_nan_and_keeps_the_first_of_ties():
    assert argmax_index(torch.tensor([float("nan"), -3.0, -1.0, -1.0])) == 2
    assert argmax_index(torch.tensor([-math.inf, float("nan")])) == 0
    with pytest.raises(ModelError, match="score"):
        Verifier(object(), score="median")


def test_problems_file_is_json_lines(tmp_path, data, tiny_dir, world):
    # No problems: an empty report is still written, so a reader can tell "none" from "not run".
    one = data.parent / "one.jsonl"
    one.write_text(data.read_text().splitlines()[0] + "\n")
    cfg = GenerateConfig(manifest=str(one), out=str(tmp_path / "pred"), world=str(tiny_dir))
    summary = run_generate(cfg, world=world, progress=False)
    assert summary.samples == 1 and (tmp_path / "pred" / "problems.jsonl").read_text() == ""
    assert json.loads((tmp_path / "pred" / "meta.json").read_text())["stage"] == "generate"
