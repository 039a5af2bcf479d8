"""The demo's claims: a verdict from a paired significance test over the test triplets, not from
the sign of a difference of means alone."""

from __future__ import annotations

import random

from worldboot.demo import ALPHA, GREEDY
from worldboot.demo.claims import claims as run_claims
from worldboot.demo.claims import verdict
from worldboot.demo.report import table2 as make_table2
from worldboot.demo.report import to_html


def _judged(n: int, scores: dict[str, list], cdm: list[list[float]]) -> dict:
    """A judged.json in the shape the predict stage writes. ``scores[name][i]`` is one score or
    a list of candidates' scores; ES equals the score, ME is 10; ``cdm[i]`` are the verifier's
    scores of triplet ``i``'s candidates (best-of-K picks their argmax)."""
    out = {}
    for name, vals in scores.items():
        rows = []
        for i in range(n):
            s = vals[i] if isinstance(vals[i], list) else [vals[i]]
            rows.append({"id": f"t{i}", "subset": "world/move" if i % 2 else "world/count", "score": s,
                         "es": s, "me": [10.0] * len(s), "cdm": cdm[i][: len(s)],
                         "transition": [float(v >= 10.0) for v in s]})
        out[name] = rows
    return out


def _state(n: int, base_slot: list[float], cdm_slot: list[float], base_choice: list[float],
           cdm_choice: list[float], cdm_transition: list[float] | None = None) -> dict:
    def model(slot, choice, bert, moved):
        return {"action_accuracy": 0.0, "slot_accuracy": sum(slot) / n, "choice_accuracy": sum(choice) / n,
                "bertscore": sum(bert) / n, "rougeL": sum(bert) / n, "transition_success": sum(moved) / n,
                "per_sample": {"ids": [f"t{i}" for i in range(n)], "exact": [0.0] * n, "slot": slot,
                               "choice": choice, "bertscore": bert, "rougeL": bert, "transition": moved}}

    rng = random.Random(0)
    return {"cdm": {"result": {
        "Chameleon ZS (base)": model(base_slot, base_choice, [0.3 + 0.01 * rng.random() for _ in range(n)], [0.0] * n),
        "CDM": model(cdm_slot, cdm_choice, [0.5 + 0.01 * rng.random() for _ in range(n)],
                     cdm_transition if cdm_transition is not None else [0.0] * n),
    }}}


def test_verdict_needs_significance_and_direction():
    assert verdict(1, 0.01) == "held"
    assert verdict(-1, 0.01) == "did not hold"
    assert verdict(1, 0.2) == "not significant"
    assert verdict(-1, 0.2) == "not significant"
    assert verdict(0, 0.01) == "not significant"  # no direction: nothing to claim
    assert verdict(1, None) == "held"  # a deterministic check: the direction decides


def test_claims_separate_a_real_gap_from_noise():
    n = 40
    rng = random.Random(1)
    noise = [rng.choice([0.0, 0.5, 1.0]) for _ in range(n)]
    # C-FT above the CWM on every triplet (a real gap, the wrong way); the ablation without
    # synthetic data scores the same as the CWM but for a few random triplets (noise).
    cwm = noise
    cft = [v + 2.0 for v in noise]
    wo_syn = [v + (0.5 if i in (3, 17) else -0.5 if i == 9 else 0.0) for i, v in enumerate(noise)]
    # C-FT's 8 candidates: the CDM ranks the candidate scoring 4 first on every triplet.
    cft_k = [[c, c, c, c + 2.0, c, c, c, c] for c in cft]
    cdm_scores = [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]] * n
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": cft_k, "CWM": [[v] * 8 for v in cwm],
                         "CWM w/o synthetic": [[v] * 8 for v in wo_syn],
                         "CWM w/o weighted loss": [[v] * 8 for v in cwm]}, cdm_scores)
    ks = [1, 2, 4, 8]
    table2 = make_table2(judged, ks)
    state = _state(n, base_slot=[0.0] * n, cdm_slot=[0.5] * n, base_choice=[0.0, 1.0] * (n // 2),
                   cdm_choice=[0.0, 1.0] * (n // 2))
    claims = run_claims(state, table2, ks, judged)

    def claim(start: str) -> dict:
        return next(c for c in claims if c["claim"].startswith(start))

    beats = claim("The CWM (synthetic data + weighted loss) beats C-FT")
    assert beats["verdict"] == "did not hold" and beats["p"] < 1e-6 and not beats["held"]
    synth = claim("Synthetic data from the CDM helps the CWM")
    assert synth["verdict"] == "not significant" and synth["p"] >= ALPHA
    best = claim("Best-of-N with the CDM raises C-FT's score")
    assert best["verdict"] == "held" and best["held"] and best["p"] < 1e-6
    slots = claim("The fine-tuned CDM gets the parts of the action right")
    assert slots["verdict"] == "held" and "p = " in slots["evidence"]
    # Choice: the CDM equals its base (50 % each), which is above chance but not above the base.
    choice = claim("The fine-tuned CDM reads the change")
    assert choice["verdict"] == "not significant" and choice["p"] == 1.0
    # Every difference is zero (no exact action on either side): no test can tell.
    exact = claim("The fine-tuned CDM names the exact action")
    assert exact["verdict"] == "not significant"
    copy = claim("Copy gets no editing success from the judge")
    assert copy["verdict"] == "held" and copy["p"] is None


def test_a_verdicts_direction_is_its_tests_own():
    """The CWM's mean score is above C-FT's (one large win), but C-FT wins on most triplets: the
    signed-rank test says C-FT is better, and the claim follows the test, not the means."""
    n = 30
    cft = [2.0] * n
    cwm = [1.5] * (n - 2) + [12.0, 12.0]
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": [[v] * 8 for v in cft], "CWM": [[v] * 8 for v in cwm],
                         "CWM w/o synthetic": [[v] * 8 for v in cwm], "CWM w/o weighted loss": [[v] * 8 for v in cwm]},
                     [[0.0] * 8] * n)
    table2 = make_table2(judged, [1, 8])
    assert table2["CWM"]["all"]["score"] > table2["C-FT"]["all"]["score"]
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    beats = next(c for c in run_claims(state, table2, [1, 8], judged) if "beats C-FT" in c["claim"])
    assert beats["verdict"] == "did not hold" and beats["p"] < ALPHA


def test_easier_to_learn_is_tested_on_transition_success_with_mcnemar():
    """The CDM's text leads to the target on 12 of 20 triplets, the CWM's image on 2, and the CWM
    never succeeds where the CDM fails: exact McNemar, 10 discordant pairs all one way."""
    from scipy.stats import binomtest

    n = 20
    moved = [1.0] * 12 + [0.0] * 8
    cwm = [[10.0] * 8 if i < 2 else [3.0] * 8 for i in range(n)]
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": cwm, "CWM": cwm, "CWM w/o synthetic": cwm,
                         "CWM w/o weighted loss": cwm}, [[0.0] * 8] * n)
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n, cdm_transition=moved)
    easier = next(c for c in run_claims(state, make_table2(judged, [1, 8]), [1, 8], judged,
                                        {"CDM": "3000 steps", "CWM": "3000 steps"}) if "easier" in c["claim"])
    assert easier["verdict"] == "held"
    assert easier["p"] == binomtest(10, 10, 0.5).pvalue
    assert "0.60 of the test triplets, the CWM's image parses to it for 0.10" in easier["evidence"]
    assert "(CDM: 3000 steps; CWM: 3000 steps)" in easier["evidence"]


def test_report_html_renders_lists_tables_images_and_escapes_text():
    md = ("# Report\n\n- **held**: a `claim`.\n- **not significant**: <script>x</script>.\n\n"
          "| a | b |\n|---|---|\n| ![](figures/x.png) | 2 |\n\nafter\n")
    page = to_html(md)
    assert "<li><strong>held</strong>: a <code>claim</code>.</li>" in page
    assert "<script>x" not in page and "&lt;script&gt;" in page
    assert '<img src="figures/x.png" alt="" />' in page and "<td>2</td>" in page
    assert page.index("</ul>") < page.index("<table>") < page.index("<p>after</p>")


def test_greedy_rows_get_no_best_of_and_a_run_without_best_of_gets_no_best_of_claim():
    n = 6
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": [[1.0] * 8] * n, "C-FT" + GREEDY: [2.0] * n,
                         "CWM": [[2.0] * 8] * n, "CWM w/o synthetic": [[1.0] * 8] * n,
                         "CWM w/o weighted loss": [[1.0] * 8] * n}, [[0.0] * 8] * n)
    table2 = make_table2(judged, [1, 2, 8])
    assert "C-FT + best-of-8" in table2 and "C-FT oracle best-of-8" in table2
    greedy = [k for k in table2 if k.startswith("C-FT" + GREEDY)]
    assert greedy == ["C-FT" + GREEDY] and table2[greedy[0]]["all"]["score"] == 2.0
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    assert any("Best-of-N" in c["claim"] for c in run_claims(state, table2, [1, 2, 8], judged))
    one = {k: [dict(r, score=r["score"][:1], es=r["es"][:1], me=r["me"][:1], cdm=r["cdm"][:1]) for r in v]
           for k, v in judged.items()}
    claims = run_claims(state, make_table2(one, [1]), [1], one)
    assert len(claims) == 9 and not any("Best-of-N" in c["claim"] for c in claims)


def test_a_run_without_the_ablations_has_no_ablation_claims():
    """``ablations: false`` trains no "w/o" rows: their two claims are left out, the others stay."""
    n = 6
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": [[1.0] * 8] * n, "CWM": [[2.0] * 8] * n}, [[0.0] * 8] * n)
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    claims = run_claims(state, make_table2(judged, [1, 8]), [1, 8], judged)
    names = [c["claim"] for c in claims]
    assert not any("weighted loss raises" in c or "Synthetic data" in c for c in names), names
    assert any(c.startswith("The CWM (synthetic data + weighted loss) beats C-FT") for c in names)
    assert len(claims) == 8  # four of the CDM; easier, beats C-FT, best-of-N and Copy


def test_the_reward_claim_compares_one_grpo_sample_with_the_cwm_and_its_best_of_k():
    """The CWM after GRPO is judged on one sample: above the CWM's one sample on every triplet
    (held), and below the CWM's best-of-8 (the CDM's pick scores 1 more), which the evidence
    reports with its own test."""
    from worldboot.demo.config import REWARD_MODELS

    RL_MODEL = REWARD_MODELS["rl"][0]

    n = 40
    rng = random.Random(2)
    base = [rng.choice([1.0, 2.0, 3.0]) for _ in range(n)]
    cwm_k = [[b, b, b, b + 1.0, b, b, b, b] for b in base]
    cdm_scores = [[0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0]] * n
    models = {"Copy": [0.0] * n, "C-FT": [[b] * 8 for b in base], "CWM": cwm_k,
              "CWM w/o synthetic": [[b] * 8 for b in base], "CWM w/o weighted loss": [[b] * 8 for b in base]}
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    without = run_claims(state, make_table2(_judged(n, models, cdm_scores), [1, 8]), [1, 8],
                         _judged(n, models, cdm_scores))
    assert not any("GRPO" in c["claim"] for c in without)
    judged = _judged(n, {**models, RL_MODEL: [b + 0.5 for b in base]}, cdm_scores)
    table2 = make_table2(judged, [1, 8])
    assert RL_MODEL in table2 and f"{RL_MODEL} + best-of-8" not in table2  # one sample: no best-of rows
    rl = next(c for c in run_claims(state, table2, [1, 8], judged) if "GRPO" in c["claim"])
    assert rl["verdict"] == "held" and rl["p"] < 1e-6
    assert f"{table2['CWM']['all']['score']:.2f} -> {table2[RL_MODEL]['all']['score']:.2f}" in rl["evidence"]
    against = rl["evidence"].split("at 8 samples a prediction, scores ")[1]
    assert against.startswith(f"{table2['CWM + best-of-8']['all']['score']:.2f} (GRPO against it: p = ")
    assert float(against.split("p = ")[1].split(")")[0]) < 1e-6  # significantly below best-of-8


def test_each_reward_row_gets_its_own_claim():
    """With a GRPO and a DPO row, each is tested against the CWM on its own: here GRPO above it
    (held) and DPO below it (did not hold)."""
    from worldboot.demo.config import REWARD_MODELS

    n = 30
    rng = random.Random(3)
    base = [rng.choice([2.0, 3.0, 4.0]) for _ in range(n)]
    models = {"Copy": [0.0] * n, **{m: [[b] * 8 for b in base] for m in
                                   ("C-FT", "CWM", "CWM w/o synthetic", "CWM w/o weighted loss")}}
    (grpo, _), (dpo, _) = REWARD_MODELS["rl"], REWARD_MODELS["dpo"]
    rewarded = {grpo: [b + 1.0 for b in base], dpo: [b - 1.0 for b in base]}
    judged = _judged(n, {**models, **rewarded}, [[0.0] * 8] * n)
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    got = {c["claim"]: c for c in run_claims(state, make_table2(judged, [1, 8]), [1, 8], judged)}
    assert got[next(k for k in got if "(GRPO)" in k)]["verdict"] == "held"
    d = got[next(k for k in got if "(DPO)" in k)]
    assert d["verdict"] == "did not hold" and "(DPO against it: p = " in d["evidence"]


def test_the_averaged_reading_uses_every_candidate_and_leaves_the_verdict_alone():
    """The CWM's first sample is C-FT's plus noise (one sample cannot tell them apart), but its
    eight samples average 1 above C-FT's on every triplet: the verdict stays the one-sample test,
    and ``averaged`` holds. Best-of-8 is compared with C-FT's mean, not its first sample."""
    n = 40
    rng = random.Random(4)
    cft = [rng.choice([2.0, 3.0, 4.0]) for _ in range(n)]
    noise = [rng.choice([-2.0, 2.0]) for _ in range(n)]
    cwm = [[c + e] + [c + (8.0 - e) / 7] * 7 for c, e in zip(cft, noise, strict=True)]  # mean c + 1
    cft_k = [[c + 1.0] + [c - 1.0 / 7] * 7 for c in cft]  # the first sample flatters C-FT; mean c
    cdm_scores = [[1.0] + [0.0] * 7] * n  # the CDM picks the first candidate
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": cft_k, "CWM": cwm, "CWM w/o synthetic": cwm,
                         "CWM w/o weighted loss": cwm}, cdm_scores)
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    got = {c["claim"]: c for c in run_claims(state, make_table2(judged, [1, 8]), [1, 8], judged)}

    def claim(start: str) -> dict:
        return next(c for k, c in got.items() if k.startswith(start))

    beats = claim("The CWM (synthetic data + weighted loss) beats C-FT")
    assert beats["verdict"] == "not significant" and beats["averaged"]["verdict"] == "held"
    assert beats["averaged"]["p"] < 1e-6 and "score 3.0" not in beats["averaged"]["evidence"]
    mean_cwm = sum(sum(c) / 8 for c in cwm) / n
    assert f"score {mean_cwm:.2f} vs {sum(cft) / n:.2f}" in beats["averaged"]["evidence"]
    best = claim("Best-of-N with the CDM raises C-FT's score")
    assert best["verdict"] == "not significant"  # the pick is the first sample itself
    assert best["averaged"]["verdict"] == "held"  # the pick beats C-FT's mean by 1 everywhere
    easier = claim("The CDM is easier to learn")  # graded when averaged: Wilcoxon, not McNemar
    assert easier["averaged"]["p"] is not None and "p = " in easier["averaged"]["evidence"]
    assert not any("averaged" in c for k, c in got.items() if "Chameleon" in k or "Copy gets" in k)


def test_one_candidate_a_prediction_has_no_averaged_reading():
    n = 6
    judged = _judged(n, {"Copy": [0.0] * n, "C-FT": [1.0] * n, "CWM": [2.0] * n}, [[0.0]] * n)
    state = _state(n, [0.0] * n, [1.0] * n, [0.0] * n, [1.0] * n)
    assert not any("averaged" in c for c in run_claims(state, make_table2(judged, [1]), [1], judged))
