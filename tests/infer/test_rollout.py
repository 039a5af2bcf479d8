"""Rollouts: k actions give k images, each step conditioned on the codes of the previous output."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from worldboot.cli import main
from worldboot.errors import ConfigError
from worldboot.infer.predict import make_generator, predict
from worldboot.infer.rollout import RolloutConfig, draw_strip, rollout, run_rollout, step_seed
from worldboot.infer.verify import Verifier

ACTIONS = ["move the red cube to the left", "open the box", "turn the object around"]



@pytest.fixture()
def image(tmp_path):
    img = Image.new("RGB", (96, 64), (128, 128, 128))
    img.paste((220, 40, 40), (40, 20, 60, 40))
    path = tmp_path / "start.png"
    img.save(path)
    return path


def test_each_step_is_conditioned_on_the_previous_output(world, image, monkeypatch):
    prompts = []
    original = world.generate_images

    def spy(batch, *args, **kwargs):
        prompts.extend(batch)
        return original(batch, *args, **kwargs)

    monkeypatch.setattr(world, "generate_images", spy)
    verifier = Verifier(world, world)
    steps = rollout(world, Image.open(image), ACTIONS, num_samples=2, seed=4, verifier=verifier)
    monkeypatch.undo()
    assert len(steps) == len(prompts) == 3
    first = world.encode_images([Image.open(image)]).codes[0]
    assert torch.equal(steps[0].source_codes, first)
    for i, step in enumerate(steps):
        pred = step.prediction
        assert pred.codes.shape == (2, world.image_seq_len) and pred.scores is not None
        assert pred.chosen == int(torch.argmax(pred.scores.total))
        if i + 1 < len(steps):
            # The next prompt is the world prompt on the chosen output's codes (not a re-encoding).
            nxt = world.world_example(pred.chosen_codes, ACTIONS[i + 1])
            assert prompts[i + 1].input_ids == nxt.input_ids
            assert torch.equal(steps[i + 1].source_codes, pred.chosen_codes)
    # Recomputing step 2 from step 1's output with the step's seed gives the same candidates.
    again = predict(world, [steps[0].prediction.chosen_codes], [ACTIONS[1]], 2,
                    generators=[make_generator(step_seed(4, 1))])[0]
    assert torch.equal(again.codes, steps[1].prediction.codes)


def test_run_rollout_writes_steps_strip_and_record(tmp_path, world, tiny_dir, image):
    cfg = RolloutConfig(world=str(tiny_dir), image=str(image), actions=ACTIONS[:2], out=str(tmp_path / "r"),
                        frame_size=64)
    steps = run_rollout(cfg, world=world)
    out = tmp_path / "r"
    for i in (1, 2):
        with Image.open(out / f"step-{i}.png") as img:
            assert img.size == (world.image_size, world.image_size)
    assert not (out / "step-3.png").exists() and not (out / "candidates").exists()
    strip = Image.open(out / "strip.png")
    assert strip.width > 3 * 64 and strip.height > 64  # source + 2 steps, captions underneath
    # The caption area below the frames is not blank.
    lower = strip.crop((0, 64 + 8, strip.width, strip.height)).convert("L")
    assert min(lower.getdata()) < 128
    record = json.loads((out / "rollout.json").read_text())
    assert [s["action"] for s in record["steps"]] == ACTIONS[:2]
    assert [s["seed"] for s in record["steps"]] == [step_seed(0, 0), step_seed(0, 1)]
    codes = load_file(str(out / "codes.safetensors"))
    assert torch.equal(codes["step-1.candidates"][0], steps[0].prediction.chosen_codes)
    assert torch.equal(codes["step-2.candidates"], steps[1].prediction.codes)
    assert not torch.equal(codes["step-1.candidates"][0], codes["step-2.candidates"][0])
    decoded = world.decode_codes(codes["step-2.candidates"][int(codes["step-2.chosen"])])[0]
    assert Image.open(out / "step-2.png").tobytes() == decoded.tobytes()
    assert (out / "config.yaml").is_file() and json.loads((out / "meta.json").read_text())["stage"] == "rollout"
    # A shorter rollout into the same folder (--fresh) leaves none of the longer one's steps behind.
    run_rollout(dataclasses.replace(cfg, actions=ACTIONS[:1], best_of=2), world=world, fresh=True)
    assert not (out / "step-2.png").exists() and len(json.loads((out / "rollout.json").read_text())["steps"]) == 1
    assert sorted(p.name for p in (out / "candidates").iterdir()) == ["step-1"]


def test_cli_rollout_best_of(tmp_path, tiny_dir, image, capsys):
    out = tmp_path / "r"
    args = ["rollout", str(image), "--world", str(tiny_dir), "--verifier", str(tiny_dir), "--best-of", "2",
            "--action", ACTIONS[0], "--action", ACTIONS[2], "--out", str(out), "--frame-size", "48", "--seed", "9"]
    assert main(args) == 0
    assert "2 steps -> " in capsys.readouterr().out
    assert main(args) == 0  # done before: the summary still names both steps
    assert f"2 steps (2 from an earlier run) -> {out}/step-1.png ... step-2.png" in capsys.readouterr().out
    record = json.loads((out / "rollout.json").read_text())
    for i, step in enumerate(record["steps"], start=1):
        assert len(step["candidates"]) == 2 and (out / f"candidates/step-{i}/1.png").is_file()
        scores = [c["score"] for c in step["candidates"]]
        assert step["chosen"] == scores.index(max(scores))
        assert (out / f"step-{i}.png").read_bytes() == (out / step["candidates"][step["chosen"]]["image"]).read_bytes()
    assert record["seed"] == 9 and record["verifier"] is not None
    # Mistakes: one line, exit 2.
    assert main(["rollout", str(image), "--world", str(tiny_dir), "--out", str(out)]) == 2
    assert main(["rollout", str(image), "--world", str(tiny_dir), "--action", " ", "--out", str(out)]) == 2
    assert main(["rollout", str(tmp_path / "none.png"), "--world", str(tiny_dir), "--action", "a", "--out",
                 str(out)]) == 2
    assert main(["rollout", str(image), "--world", str(tiny_dir), "--action", "a", "--frame-size", "20000", "--out",
                 str(tmp_path / "wide")]) == 2  # a strip of 40000 x 20000 pixels: refused, not drawn
    err = capsys.readouterr().err
    assert "--action" in err and "action 1 is empty" in err and "none.png" in err and "Traceback" not in err
    assert "frame_size must be 16 to 4096 pixels, got 20000" in err and not (tmp_path / "wide").exists()


def test_draw_strip_wraps_long_captions():
    frames = [Image.new("RGB", (32, 32), c) for c in ("red", "blue")]
    short = draw_strip(frames, ["a", "b"], 100)
    long = draw_strip(frames, ["a", "put the small purple triangle on the large orange square " * 2], 100)
    assert short.width == long.width and long.height > short.height
    assert short.getpixel((60, 60)) == (255, 0, 0)  # frames are resized, not cropped


def test_a_killed_or_lengthened_rollout_goes_on_from_its_last_step(tmp_path, world, tiny_dir, image, monkeypatch):
    import worldboot.infer.rollout as mod

    cfg = RolloutConfig(world=str(tiny_dir), image=str(image), actions=ACTIONS, out=str(tmp_path / "straight"),
                        best_of=2, frame_size=32)
    run_rollout(cfg, world=world)
    straight = load_file(str(tmp_path / "straight" / "codes.safetensors"))
    # Killed during step 2: step 1 is kept, and the rerun predicts steps 2 and 3 only.
    calls = []

    def dies_at_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return predict(*args, **kwargs)

    killed = dataclasses.replace(cfg, out=str(tmp_path / "killed"))
    monkeypatch.setattr(mod, "predict", dies_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        run_rollout(killed, world=world)
    monkeypatch.setattr(mod, "predict", predict)
    assert (tmp_path / "killed" / "step-1.png").is_file() and not (tmp_path / "killed" / "rollout.json").exists()
    assert len(run_rollout(killed, world=world)) == 2
    # Lengthened: one action first, then all three; the first step is not predicted again.
    grown = dataclasses.replace(cfg, actions=ACTIONS[:1], out=str(tmp_path / "grown"))
    run_rollout(grown, world=world)
    assert len(run_rollout(dataclasses.replace(grown, actions=ACTIONS), world=world)) == 2
    for folder in ("killed", "grown"):
        codes = load_file(str(tmp_path / folder / "codes.safetensors"))
        assert codes.keys() == straight.keys() and all(torch.equal(codes[k], straight[k]) for k in codes)
        record = json.loads((tmp_path / folder / "rollout.json").read_text())
        assert record["steps"] == json.loads((tmp_path / "straight" / "rollout.json").read_text())["steps"]
    # Other settings, another action or fewer actions would replace steps: refused, the folder kept.
    grown_files = {p: p.read_bytes() for p in (tmp_path / "grown").rglob("*") if p.is_file()}
    for changed, step in (({"seed": 1}, 1), ({"actions": [ACTIONS[0], "paint it blue", ACTIONS[2]]}, 2),
                          ({"actions": ACTIONS[:2]}, 3)):
        with pytest.raises(ConfigError, match=rf"grown holds a rollout of 3 steps whose steps from {step} on .*--fresh"):
            run_rollout(dataclasses.replace(cfg, out=str(tmp_path / "grown"), **changed), world=world)
        assert {p: p.read_bytes() for p in (tmp_path / "grown").rglob("*") if p.is_file()} == grown_files
    # --fresh: every step again.
    assert len(run_rollout(dataclasses.replace(cfg, seed=1, out=str(tmp_path / "grown")), world=world, fresh=True)) == 3
