"""How the demo measures a model's actions (Table 1): the text it writes for each test
transition, judged by the text metrics, by the world's parser (exact action, slots), and its
choice of the true action among others by likelihood."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from worldboot.demo.config import CHOICES
from worldboot.runs import write_atomic


def measure_actions(bb: Any, test: list[Any], seed: int, out: Path) -> dict[str, Any]:
    """Table 1's figures for the backbone ``bb`` on the test triplets; its texts go to ``out``
    (JSON lines of ``id`` and ``action``).

    Returns:
        The text metrics' overall figures, ``action_accuracy`` (the text parses to the exact
        action), ``slot_accuracy``, ``transition_success`` (the text, applied by the world's
        rules to the source scene, gives the target scene:
        :func:`~worldboot.world.transition.text_transition`), ``choice_accuracy``
        (:func:`choice_hits`), and
        ``per_sample``: per test triplet, in test order, what the claims' paired tests read.
    """
    from worldboot.evaluate.text_metrics import TextMetricsConfig, score_actions
    from worldboot.world.actions import Action
    from worldboot.world.scene import Scene
    from worldboot.world.text import parse_action, slot_accuracy
    from worldboot.world.transition import text_transition

    preds = describe(bb, test)
    rows, summary = score_actions(preds, {t.id: (t.subset, t.action) for t in test}, TextMetricsConfig())
    correct, slots, moved = [], [], []
    for t in test:
        truth = Action.from_json(t.meta["action"])
        got = parse_action(preds[t.id])
        correct.append(float(got is not None and got == truth))
        slots.append(slot_accuracy(preds[t.id], truth))
        source, target = Scene.from_json(t.meta["source_scene"]), Scene.from_json(t.meta["target_scene"])
        moved.append(float(text_transition(source, preds[t.id], target)))
    choices = choice_hits(bb, test, seed)
    overall = dict(summary["overall"])
    overall["action_accuracy"] = sum(correct) / len(correct)
    overall["slot_accuracy"] = sum(slots) / len(slots)
    overall["transition_success"] = sum(moved) / len(moved)
    overall["choice_accuracy"] = sum(choices) / max(1, len(choices))
    by_id = {r["id"]: r for r in rows}
    overall["per_sample"] = {
        "ids": [t.id for t in test], "exact": correct, "slot": slots, "transition": moved, "choice": choices,
        "bertscore": [by_id[t.id].get("bertscore") for t in test],
        "rougeL": [by_id[t.id].get("rougeL") for t in test],
    }
    write_atomic(out, "".join(json.dumps({"id": i, "action": a}) + "\n" for i, a in preds.items()))
    return overall


def choice_hits(bb: Any, triplets: list[Any], seed: int, n_other: int = CHOICES - 1) -> list[float]:
    """Per triplet, 1.0 if ``bb`` picks the true action, argmax log p(a | o_s, o_t), among it
    and ``n_other`` other actions that can happen in the same source scene (canonical texts
    for all, so wording gives nothing away), else 0.0. Unlike a generated text, this asks
    only whether the model reads the change between the two images: chance is
    ``1 / (n_other + 1)``."""
    from worldboot import world
    from worldboot.images import open_image
    from worldboot.world.text import canonical_text

    hits = []
    for t in triplets:
        truth = world.Action.from_json(t.meta["action"])
        scene = world.Scene.from_json(t.meta["source_scene"])
        rng = random.Random(f"worldboot/demo/choice/{seed}/{t.id}")
        options = [truth, *world.distractor_actions(scene, truth, n_other, rng)]
        enc = bb.encode_images([open_image(t.source), open_image(t.target)])
        examples = [bb.dynamics_example(enc.codes[0], enc.codes[1], canonical_text(a)) for a in options]
        hits.append(float(int(bb.score_shared_prefix(examples).total.argmax()) == 0))
    return hits


def describe(bb: Any, triplets: list[Any]) -> dict[str, str]:
    """The action text ``bb`` writes (greedily) for each triplet's source and target, by id."""
    from worldboot.images import open_image

    out = {}
    for start in range(0, len(triplets), 16):
        chunk = triplets[start : start + 16]
        enc = bb.encode_images([open_image(p) for t in chunk for p in (t.source, t.target)])
        prompts = [bb.dynamics_example(enc.codes[2 * i], enc.codes[2 * i + 1]) for i in range(len(chunk))]
        for t, text in zip(chunk, bb.generate_text(prompts, max_new_tokens=24), strict=True):
            out[t.id] = text
    return out


def mined_label_precision(mining: Path, truth: Path) -> dict[str, Any]:
    """Label precision of the mined pairs (:func:`worldboot.world.clip_truth.label_precision`):
    of every pair the CDM annotated (``annotated/annotated.jsonl``) and of those Algorithm 1
    selected for the CWM (``synthetic/synthetic.jsonl``: :func:`selected_label_precision`),
    per clip family."""
    from worldboot.runs import read_jsonl
    from worldboot.world.clip_truth import label_precision
    from worldboot.world.gen import read_clip_truth

    annotated = [(r["video"], r["source_frame"], r["target_frame"], r["action"])
                 for _, r in read_jsonl(mining / "annotated" / "annotated.jsonl")]
    return {"annotated": label_precision(annotated, read_clip_truth(truth)),
            "selected": selected_label_precision(mining / "synthetic", truth)}


def selected_label_precision(synthetic: Path, truth: Path) -> dict[str, Any]:
    """Label precision, per clip family, of the pairs ``worldboot select`` wrote to
    ``synthetic/synthetic.jsonl`` (each triplet's ``meta`` names its clip and frames)."""
    from worldboot.runs import read_jsonl
    from worldboot.world.clip_truth import label_precision
    from worldboot.world.gen import read_clip_truth

    selected = [(r["meta"]["video"], *r["meta"]["frames"], r["action"])
                for _, r in read_jsonl(synthetic / "synthetic.jsonl")]
    return label_precision(selected, read_clip_truth(truth))
