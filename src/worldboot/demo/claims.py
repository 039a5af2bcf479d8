"""Which of the paper's claims held on a demo run: each a comparison of two models over the
same test triplets, with a p-value from :mod:`worldboot.stats` and a verdict."""

from __future__ import annotations

from typing import Any

from worldboot.demo.config import ALPHA, CHOICES, REWARD_MODELS
from worldboot.stats import binomial_p, paired_p


def pick(row: dict[str, Any], k: int) -> int:
    """Index of best-of-k: the candidate with the highest CDM score among the first k."""
    cands = row["cdm"][:k]
    return max(range(len(cands)), key=lambda i: cands[i])

def verdict(better: bool, p: float | None) -> str:
    """``held``, ``did not hold`` or ``not significant`` (``p >= ALPHA``, either direction).

    Without a p-value (a deterministic check, or a run from before per-sample results were kept)
    the direction alone decides.
    """
    if p is not None and p >= ALPHA:
        return "not significant"
    return "held" if better else "did not hold"

def per_sample(judged: dict[str, list[dict[str, Any]]], name: str, metric: str, k: int = 1) -> dict[str, float]:
    """Test id -> the judge's ``metric`` of ``name``'s best-of-``k`` candidate."""
    return {r["id"]: r[metric][pick(r, k) if k > 1 else 0] for r in judged[name]}

def claims(state: dict[str, Any], table2: dict[str, Any], ks: list[int],
            judged: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The paper's claims, each with the numbers of this run, a p-value and a verdict.

    A comparison of two models is a two-sided Wilcoxon signed-rank test over the test triplets
    (paired: both models on the same triplet); the multiple-choice claim also tests against
    chance (exact binomial), and the claim's p-value is the larger of its tests'. A claim
    ``held`` when its direction is right and ``p < ALPHA``; ``not significant`` when
    ``p >= ALPHA`` (this run cannot tell); ``did not hold`` when the difference is significant
    the other way.
    """
    kmax = max(ks)
    cdm = state["cdm"]["result"]
    score = {name: v["all"]["score"] for name, v in table2.items()}
    es = {name: v["all"].get("es") for name, v in table2.items()}
    me = {name: v["all"].get("me") for name, v in table2.items()}

    def es_me(a: str, b: str) -> str:
        # The two criteria behind a score gap (Table 3): what each model gained and lost.
        return f" (ES {es[a]:.2f} vs {es[b]:.2f}, ME {me[a]:.2f} vs {me[b]:.2f})"

    base_m, cdm_m = cdm["Chameleon ZS (base)"], cdm["CDM"]
    base_s, cdm_s = base_m.get("per_sample", {}), cdm_m.get("per_sample", {})
    has_samples = bool(base_s) and bool(cdm_s)

    def cdm_p(metric: str) -> float | None:
        return paired_p(cdm_s[metric], base_s[metric]) if has_samples else None

    def world_p(a: str, b: str, metric: str = "score", ka: int = 1, kb: int = 1) -> float | None:
        x, y = per_sample(judged, a, metric, ka), per_sample(judged, b, metric, kb)
        return paired_p([x[i] for i in y], list(y.values()))

    cdm_acc, base_acc = cdm_m["action_accuracy"], base_m["action_accuracy"]
    cdm_slots, base_slots = cdm_m.get("slot_accuracy", 0.0), base_m.get("slot_accuracy", 0.0)
    cdm_choice, base_choice = cdm_m.get("choice_accuracy", 0.0), base_m.get("choice_accuracy", 0.0)
    cwm_success = (es["CWM"] or 0.0) / 10.0
    text_better = all((cdm_m.get(m) or 0) > (base_m.get(m) or 0) for m in ("bertscore", "rougeL"))
    text_ps = [cdm_p(m) for m in ("bertscore", "rougeL")]
    choice_ps = [cdm_p("choice"), binomial_p(cdm_s["choice"], 1 / CHOICES) if has_samples else None]
    easier_p = None
    if has_samples:
        cwm_es = per_sample(judged, "CWM", "es")
        easier_p = paired_p(cdm_s["slot"], [cwm_es[i] / 10.0 for i in cdm_s["ids"]])

    def worst(ps: list[float | None]) -> float | None:
        return None if any(p is None for p in ps) else max(ps)  # type: ignore[type-var]

    rows = [
        ("Fine-tuning makes Chameleon a much better dynamics model than zero-shot (Table 1 metrics)",
         text_better, worst(text_ps),
         f"BERTScore {fmt(base_m.get('bertscore'))} -> {fmt(cdm_m.get('bertscore'))}, ROUGE-L "
         f"{fmt(base_m.get('rougeL'))} -> {fmt(cdm_m.get('rougeL'))} (base -> CDM)"),
        ("The fine-tuned CDM names the exact action (the world's stricter test)",
         cdm_acc > base_acc, cdm_p("exact"), f"action accuracy {base_acc:.2f} (base) -> {cdm_acc:.2f} (CDM)"),
        ("The fine-tuned CDM gets the parts of the action right (which object, which change)",
         cdm_slots > base_slots, cdm_p("slot"), f"slot accuracy {base_slots:.2f} (base) -> {cdm_slots:.2f} (CDM)"),
        ("The fine-tuned CDM reads the change between the two images (picks the true action among "
         f"{CHOICES} that can happen in the scene more often than the base and than chance, {1 / CHOICES:.2f})",
         cdm_choice > max(base_choice, 1 / CHOICES), worst(choice_ps),
         f"choice accuracy {base_choice:.2f} (base) -> {cdm_choice:.2f} (CDM)"),
        ("The CDM is easier to learn than the CWM at equal compute (Section 1)",
         cdm_slots > cwm_success, easier_p,
         f"after the same steps and batch, partial credit on both sides: CDM slot accuracy "
         f"{cdm_slots:.2f} vs CWM editing success {cwm_success:.2f} (ES / 10)"),
        ("The CWM (synthetic data + weighted loss) beats C-FT (Table 2)",
         score["CWM"] > score["C-FT"], world_p("CWM", "C-FT"),
         f"score {score['CWM']:.2f} vs {score['C-FT']:.2f}" + es_me("CWM", "C-FT")),
        ("The recognition-weighted loss raises editing success (Table 3)",
         (es["CWM"] or 0) > (es["CWM w/o weighted loss"] or 0), world_p("CWM", "CWM w/o weighted loss", "es"),
         f"ES {es['CWM']:.2f} with vs {es['CWM w/o weighted loss']:.2f} without (ME {me['CWM']:.2f} vs "
         f"{me['CWM w/o weighted loss']:.2f})"),
        ("Synthetic data from the CDM helps the CWM (ablation)",
         score["CWM"] > score["CWM w/o synthetic"], world_p("CWM", "CWM w/o synthetic"),
         f"score {score['CWM']:.2f} with vs {score['CWM w/o synthetic']:.2f} without"
         + es_me("CWM", "CWM w/o synthetic")),
    ] + ([] if kmax < 2 else [
        (f"Best-of-N with the CDM raises C-FT's score (Figure 7, K={kmax})",
         score[f"C-FT + best-of-{kmax}"] > score["C-FT"], world_p("C-FT", "C-FT", ka=kmax),
         f"score {score['C-FT']:.2f} (K=1) -> {score[f'C-FT + best-of-{kmax}']:.2f} (K={kmax})"
         + es_me(f"C-FT + best-of-{kmax}", "C-FT")),
    ]) + [
        # After the paper (SWIRL): one sample of the CWM trained against the CDM's reward,
        # against the CWM's one sample and against its best-of-K, which pays K samples.
        (f"Reward optimisation with the CDM ({objective.upper()}) raises the CWM's score at temperature 1 "
         "(after the paper)",
         score[row] > score["CWM"], world_p(row, "CWM"),
         f"score {score['CWM']:.2f} -> {score[row]:.2f}" + es_me(row, "CWM")
         + ("" if kmax < 2 else
            f"; the CWM + best-of-{kmax}, at {kmax} samples a prediction, scores "
            f"{score[f'CWM + best-of-{kmax}']:.2f} ({objective.upper()} against it: "
            f"p = {world_p(row, 'CWM', kb=kmax):.2g})"))
        for row, objective in REWARD_MODELS.values() if row in score
    ] + [
        ("Copy gets no editing success from the judge (sanity check)",
         (es["Copy"] or 0) == 0.0, None, f"Copy ES {es['Copy']:.2f}"),
    ]
    out = []
    for claim, better, p, evidence in rows:
        v = verdict(better, p)
        out.append({"claim": claim, "verdict": v, "held": v == "held", "p": p,
                    "evidence": evidence + ("" if p is None else f"; p = {p:.2g}")})
    return out

def fmt(x: Any) -> str:
    return f"{x:.2f}" if isinstance(x, float) else str(x)
