"""The reverse direction's choice of five: do a demo run's world models read the change?

The figures of docs/results.md ("The reverse direction") and docs/log.md (2026-12-03): on the
cold paper run's 200 test triplets, picking the true action among Table 1's five choices by
log p(target | source, action) is right for 96.5 % of them with C-FT, 95.5 % with the CWM w/o
synthetic and 74 % with the CWM, against 28 % for the CDM's own log p(action | source, target).

For each world model of a finished demo run, and for each test triplet, the five options are
exactly those of Table 1's choice column (the true action and four others that can happen in
the same source scene, canonical texts, drawn as
:func:`worldboot.demo.actions.choice_hits` draws them with the run's seed); the world model
picks the option under which the true target image is likeliest (summed log-probability of the
target's image tokens, which every option shares in number). The CDM's figure is Table 1's own
(``choice_hits`` on the CDM); the script checks that its options give the CDM the same hits, so
both directions answer the same questions.

    worldboot demo --preset paper --out runs/demo-paper
    python scripts/reverse_choice.py runs/demo-paper [--json runs/demo-paper/reverse_choice.json]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any


def options(t: Any, seed: int) -> list[str]:
    """Table 1's five choices for triplet ``t``, the true action first, as canonical texts (the
    draw of :func:`worldboot.demo.actions.choice_hits`)."""
    from worldboot import world
    from worldboot.demo.config import CHOICES
    from worldboot.world.text import canonical_text

    truth = world.Action.from_json(t.meta["action"])
    scene = world.Scene.from_json(t.meta["source_scene"])
    rng = random.Random(f"worldboot/demo/choice/{seed}/{t.id}")
    return [canonical_text(a) for a in [truth, *world.distractor_actions(scene, truth, CHOICES - 1, rng)]]


def hits(bb: Any, triplets: list[Any], seed: int, direction: str) -> list[float]:
    """Per triplet, 1.0 when ``bb`` ranks the true action first among :func:`options`:
    ``world``: by log p(target | source, action); ``dynamics``: by log p(action | source, target)."""
    from worldboot.images import open_image

    out = []
    for t in triplets:
        texts = options(t, seed)
        enc = bb.encode_images([open_image(t.source), open_image(t.target)])
        source, target = enc.codes[0], enc.codes[1]
        if direction == "world":
            scores = bb.score([bb.world_example(source, text, target) for text in texts], batch_size=len(texts))
        else:  # as choice_hits scores them, to the last bit
            scores = bb.score_shared_prefix([bb.dynamics_example(source, target, text) for text in texts])
        out.append(float(int(scores.total.argmax()) == 0))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a finished `worldboot demo` run directory")
    p.add_argument("--json", metavar="FILE", help="also write the figures and the per-triplet hits here")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()

    from worldboot.progress import quiet_libraries

    if not args.verbose:
        quiet_libraries()
    from worldboot.config import read_yaml
    from worldboot.data.schema import read_manifest
    from worldboot.demo.actions import choice_hits
    from worldboot.demo.config import REWARD_MODELS, WORLD_MODELS
    from worldboot.demo.report import slug
    from worldboot.models import load_backbone

    run = Path(args.run)
    seed = int(read_yaml(run / "config.yaml").get("seed", 0))
    test = read_manifest(run / "data" / "test" / "manifest.jsonl")
    ids = [t.id for t in test]
    results: dict[str, dict[str, Any]] = {}

    cdm = load_backbone(run / "cdm")
    table1 = choice_hits(cdm, test, seed)
    mine = hits(cdm, test, seed, "dynamics")
    if mine != table1:
        raise SystemExit("the options drawn here are not Table 1's (worldboot.demo.actions.choice_hits changed): "
                         "update options() before reading the world models' figures")
    results["CDM"] = {"direction": "log p(action given source, target)", "hits": table1}
    del cdm
    rows = [*WORLD_MODELS, *(row for row, _ in REWARD_MODELS.values())]
    for name in rows:
        path = run / "cwm" / slug(name)
        if not path.is_dir():  # a row this run did not train (the smoke preset has no GRPO or DPO)
            continue
        results[name] = {"direction": "log p(target given source, action)",
                         "hits": hits(load_backbone(path), test, seed, "world")}

    print(f"{run}: the true action among 5, {len(test)} test triplets (seed {seed}; chance 0.20)")
    print("| model | picks by | choice of 5 |")
    print("|---|---|---|")
    for name, r in results.items():
        r["accuracy"] = sum(r["hits"]) / max(1, len(r["hits"]))
        print(f"| {name} | {r['direction']} | {r['accuracy']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"run": str(run), "seed": seed, "ids": ids, "models": results}, indent=1))


if __name__ == "__main__":
    main()
