"""Which of the paper's claims held on a demo run: each a comparison of two models over the
same test triplets, with a p-value from :mod:`worldboot.stats` and a verdict."""

from __future__ import annotations

import statistics
from typing import Any

from worldboot.demo.config import ALPHA, CHOICES, REWARD_MODELS
from worldboot.stats import binomial_test, mcnemar, paired_test


def pick(row: dict[str, Any], k: int) -> int:
    """Index of best-of-k: the candidate with the highest CDM score among the first k."""
    cands = row["cdm"][:k]
    return max(range(len(cands)), key=lambda i: cands[i])

def verdict(direction: int, p: float | None) -> str:
    """``held``, ``did not hold`` or ``not significant``, from one test's direction (the sign of
    its own statistic: 1 the claimed way, -1 the other) and its p-value.

    Without a p-value (a deterministic check) the direction alone decides.
    """
    if p is None:
        return "held" if direction > 0 else "did not hold"
    if p >= ALPHA or direction == 0:
        return "not significant"
    return "held" if direction > 0 else "did not hold"


def all_of(tests: list[tuple[int, float | None]]) -> tuple[int, float | None]:
    """Several tests of one claim: its direction where every test agrees (else 0), the largest p."""
    directions = {d for d, _ in tests}
    ps = [p for _, p in tests]
    return (directions.pop() if len(directions) == 1 else 0), (None if None in ps else max(ps))  # type: ignore[type-var]


def per_sample(judged: dict[str, list[dict[str, Any]]], name: str, metric: str, k: int = 1,
               averaged: bool = False) -> dict[str, float]:
    """Test id -> the judge's ``metric`` of ``name``'s best-of-``k`` candidate, or with
    ``averaged`` and ``k == 1`` the mean over all its candidates (its expected one-sample value)."""
    if averaged and k == 1:
        return {r["id"]: statistics.fmean(r[metric]) for r in judged[name]}
    return {r["id"]: r[metric][pick(r, k) if k > 1 else 0] for r in judged[name]}

#: A claim as :func:`claims` tests it: its text, its test's (direction, p) and its evidence.
Row = tuple[str, tuple[int, "float | None"], str]


class _WorldFigures:
    """Table 2's means and the judged samples of a run, for the world models' claims.

    With ``averaged``, a model's one-sample figure on a test triplet is the mean over all the
    candidates it drew there (the predict stage draws K for best-of-K), not its first candidate:
    the same expected value with less sampling noise, the noise the paper averages over several
    runs (its Limitations). Best-of-K figures stay the verifier's pick. The means then
    come from the judged samples, not from Table 2.
    """

    def __init__(self, table2: dict[str, Any], judged: dict[str, list[dict[str, Any]]],
                 averaged: bool = False) -> None:
        self.judged, self.averaged = judged, averaged
        self.score = {name: v["all"]["score"] for name, v in table2.items()}
        self.es = {name: v["all"].get("es") for name, v in table2.items()}
        self.me = {name: v["all"].get("me") for name, v in table2.items()}
        if averaged:
            for name in judged:
                for key, metric in ((self.score, "score"), (self.es, "es"), (self.me, "me")):
                    key[name] = statistics.fmean(per_sample(judged, name, metric, averaged=True).values())

    def values(self, name: str, metric: str = "score", k: int = 1) -> dict[str, float]:
        """Test id -> ``name``'s best-of-``k`` ``metric`` (with ``averaged``, k = 1 is the mean)."""
        return per_sample(self.judged, name, metric, k, self.averaged)

    def test(self, a: str, b: str, metric: str = "score", ka: int = 1, kb: int = 1) -> tuple[int, float | None]:
        """Paired test of ``a``'s best-of-``ka`` against ``b``'s best-of-``kb`` on ``metric``."""
        x, y = self.values(a, metric, ka), self.values(b, metric, kb)
        return paired_test([x[i] for i in y], list(y.values()))

    def es_me(self, a: str, b: str) -> str:
        """The two criteria behind a score gap (Table 3): what each model gained and lost."""
        es, me = self.es, self.me
        return f" (ES {es[a]:.2f} vs {es[b]:.2f}, ME {me[a]:.2f} vs {me[b]:.2f})"


def claims(state: dict[str, Any], table2: dict[str, Any], ks: list[int],
           judged: dict[str, list[dict[str, Any]]], training: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The paper's claims, each with the numbers of this run, a p-value and a verdict.

    Each claim is one test over the test triplets, paired (both models on the same triplet):
    exact McNemar for 0/1 outcomes (exact action, choice, transition success), two-sided
    Wilcoxon signed-rank for graded ones (scores, slots, text metrics); the multiple-choice
    claim also tests against chance (exact binomial). A claim's direction is the sign of its
    own test's statistic, never of a mean beside it. ``held``: the claimed direction with
    ``p < ALPHA``; ``not significant``: ``p >= ALPHA``; ``did not hold``: significant the other way.

    The verdict is the paper's one sample a prediction. A world model's claim also carries
    ``averaged``: the same test with each model's one-sample figure averaged over the
    candidates it drew for best-of-K (:class:`_WorldFigures`), a second reading beside the
    verdict, never in its place.

    Args:
        state: The demo's ``stages.json``.
        table2: The report's Table 2 (means per model).
        ks: The best-of-K sizes.
        judged: Per model, per test triplet, the judge's figures of each candidate (with
            ``transition``: whether each candidate's image parses to the target scene).
        training: Per model (``CDM``, ``CWM``), how it was trained, for the "easier" claim's evidence.
    """
    cdm = state["cdm"]["result"]
    cdm_s, kmax, how = cdm["CDM"]["per_sample"], max(ks), training or {}
    world = world_claims(cdm_s, _WorldFigures(table2, judged), kmax, how)
    out = [_claim(row) for row in dynamics_claims(cdm) + world]
    if kmax > 1:  # candidates to average over
        averaged = world_claims(cdm_s, _WorldFigures(table2, judged, averaged=True), kmax, how)
        for c, row in zip(out[len(out) - len(world):], averaged, strict=True):
            if row[1][1] is not None:
                c["averaged"] = _claim(row)
    return out


def _claim(row: Row) -> dict[str, Any]:
    claim, (direction, p), evidence = row
    v = verdict(direction, p)
    return {"claim": claim, "verdict": v, "held": v == "held", "p": p,
            "evidence": evidence + ("" if p is None else f"; p = {p:.2g}")}


def dynamics_claims(cdm: dict[str, Any]) -> list[Row]:
    """Table 1's claims: the fine-tuned CDM against its zero-shot base."""
    base_m, cdm_m = cdm["Chameleon ZS (base)"], cdm["CDM"]
    base_s, cdm_s = base_m["per_sample"], cdm_m["per_sample"]

    def mean(name: str, key: str) -> float:
        return float(cdm[name].get(key) or 0.0)

    return [
        ("Fine-tuning makes Chameleon a much better dynamics model than zero-shot (Table 1 metrics)",
         all_of([paired_test(cdm_s[m], base_s[m]) for m in ("bertscore", "rougeL")]),
         f"BERTScore {fmt(base_m.get('bertscore'))} -> {fmt(cdm_m.get('bertscore'))}, ROUGE-L "
         f"{fmt(base_m.get('rougeL'))} -> {fmt(cdm_m.get('rougeL'))} (base -> CDM)"),
        ("The fine-tuned CDM names the exact action (the world's stricter test)",
         mcnemar(cdm_s["exact"], base_s["exact"]),
         f"action accuracy {mean('Chameleon ZS (base)', 'action_accuracy'):.2f} (base) -> "
         f"{mean('CDM', 'action_accuracy'):.2f} (CDM)"),
        ("The fine-tuned CDM gets the parts of the action right (which object, which change)",
         paired_test(cdm_s["slot"], base_s["slot"]),
         f"slot accuracy {mean('Chameleon ZS (base)', 'slot_accuracy'):.2f} (base) -> "
         f"{mean('CDM', 'slot_accuracy'):.2f} (CDM)"),
        ("The fine-tuned CDM reads the change between the two images (picks the true action among "
         f"{CHOICES} that can happen in the scene more often than the base and than chance, {1 / CHOICES:.2f})",
         all_of([mcnemar(cdm_s["choice"], base_s["choice"]), binomial_test(cdm_s["choice"], 1 / CHOICES)]),
         f"choice accuracy {mean('Chameleon ZS (base)', 'choice_accuracy'):.2f} (base) -> "
         f"{mean('CDM', 'choice_accuracy'):.2f} (CDM)"),
    ]


def world_claims(cdm_s: dict[str, Any], f: _WorldFigures, kmax: int, how: dict[str, str]) -> list[Row]:
    """The world models' claims: "easier to learn" on transition success, Tables 2 and 3, the
    synthetic-data ablation, best-of-N, the reward rows and the Copy sanity check."""
    score, es, me = f.score, f.es, f.me
    cwm_moved = f.values("CWM", "transition")
    cwm_transition = [cwm_moved[i] for i in cdm_s["ids"]]
    rows: list[Row] = [
        ("The CDM is easier to learn than the CWM (Section 1): on one scale, transition success",
         # Averaged over candidates, the CWM's figure is a share, not 0/1: Wilcoxon, not McNemar.
         (paired_test if f.averaged else mcnemar)(cdm_s["transition"], cwm_transition),
         f"the CDM's text applied by the world's rules gives the target scene for "
         f"{sum(cdm_s['transition']) / len(cdm_s['ids']):.2f} of the test triplets, the CWM's "
         f"image parses to it for {sum(cwm_transition) / len(cwm_transition):.2f}"
         + (f" (CDM: {how['CDM']}; CWM: {how['CWM']})" if "CDM" in how and "CWM" in how else "")),
        ("The CWM (synthetic data + weighted loss) beats C-FT (Table 2)",
         f.test("CWM", "C-FT"),
         f"score {score['CWM']:.2f} vs {score['C-FT']:.2f}" + f.es_me("CWM", "C-FT")),
    ]
    # The ablations' claims, when the run trained them (``DemoConfig.ablations``).
    if "CWM w/o weighted loss" in score:
        rows.append(("The recognition-weighted loss raises editing success (Table 3)",
                     f.test("CWM", "CWM w/o weighted loss", "es"),
                     f"ES {es['CWM']:.2f} with vs {es['CWM w/o weighted loss']:.2f} without (ME {me['CWM']:.2f} vs "
                     f"{me['CWM w/o weighted loss']:.2f})"))
    if "CWM w/o synthetic" in score:
        rows.append(("Synthetic data from the CDM helps the CWM (ablation)",
                     f.test("CWM", "CWM w/o synthetic"),
                     f"score {score['CWM']:.2f} with vs {score['CWM w/o synthetic']:.2f} without"
                     + f.es_me("CWM", "CWM w/o synthetic")))
    if kmax >= 2:
        rows.append((f"Best-of-N with the CDM raises C-FT's score (Figure 7, K={kmax})",
                     f.test("C-FT", "C-FT", ka=kmax),
                     f"score {score['C-FT']:.2f} (K=1) -> {score[f'C-FT + best-of-{kmax}']:.2f} (K={kmax})"
                     + f.es_me(f"C-FT + best-of-{kmax}", "C-FT")))
    # After the paper (SWIRL): one sample of the CWM trained against the CDM's reward, against
    # the CWM's one sample and against its best-of-K, which pays K samples.
    for row, objective in REWARD_MODELS.values():
        if row in score:
            rows.append((
                f"Reward optimisation with the CDM ({objective.upper()}) raises the CWM's score at temperature 1 "
                "(after the paper)",
                f.test(row, "CWM"),
                f"score {score['CWM']:.2f} -> {score[row]:.2f}" + f.es_me(row, "CWM")
                + ("" if kmax < 2 else
                   f"; the CWM + best-of-{kmax}, at {kmax} samples a prediction, scores "
                   f"{score[f'CWM + best-of-{kmax}']:.2f} ({objective.upper()} against it: "
                   f"p = {f.test(row, 'CWM', kb=kmax)[1]:.2g})")))
    rows.append(("Copy gets no editing success from the judge (sanity check)",
                 (1 if (es["Copy"] or 0) == 0.0 else -1, None), f"Copy ES {es['Copy']:.2f}"))
    return rows


def fmt(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)
