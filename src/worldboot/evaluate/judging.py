"""The judge's part of ``worldboot evaluate``: every prediction (and candidate) judged in one
batch, the best-of-N oracle rows picked by the verdicts, and the report's notes on the judge's
cost and failures. (The judges themselves are :mod:`worldboot.evaluate.judge`.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from worldboot.evaluate.entries import Entry, EvalProgress
from worldboot.evaluate.judge import JudgeConfig, JudgeRequest, Verdict


def _apply_verdict(entry: Entry, verdict: Verdict) -> None:
    """The verdict's scores into the entry's values, or its error into the entry's errors."""
    entry.verdict = verdict
    if verdict.ok:
        entry.values["judge_score"] = verdict.score
        entry.values["editing_success"] = verdict.editing_success
        entry.values["minimal_editing"] = verdict.minimal_editing
    elif verdict.error:
        entry.errors.append(f"judge: {verdict.error}")


def judge_entries(judge: Any, entries: Sequence[Entry], with_candidates: bool, progress: EvalProgress) -> None:
    """Judge every prediction (and every candidate when ``with_candidates``) in one batch."""
    judged = [e for e in entries if e.image is not None]
    requests = [JudgeRequest(e.triplet.source, e.triplet.action, e.image, e.triplet) for e in judged]
    cand_refs: list[tuple[Entry, int]] = []
    if with_candidates:
        for e in judged:
            for ci, c in enumerate(e.candidates):
                cand_refs.append((e, ci))
                requests.append(JudgeRequest(e.triplet.source, e.triplet.action, c["image"], e.triplet))
    verdicts = judge.judge_many(requests, progress.task(f"judge ({judge.name})", len(requests)))
    for e, v in zip(judged, verdicts[: len(judged)], strict=True):
        _apply_verdict(e, v)
    for (e, ci), v in zip(cand_refs, verdicts[len(judged) :], strict=True):
        e.candidates[ci].update(
            judge_score=v.score, editing_success=v.editing_success, minimal_editing=v.minimal_editing, judge_error=v.error
        )


def oracle_entries(name: str, entries: Sequence[Entry]) -> tuple[str, list[Entry]] | None:
    """The best-of-N row of a model: per sample, the candidate with the best judge score
    (ties: the first). None when the model's predictions have no candidates."""
    with_cands = [e for e in entries if e.candidates]
    if not with_cands:
        return None
    oname = f"{name} +Best-of-{max(len(e.candidates) for e in with_cands)}"
    rows = []
    for e in entries:
        scored = [(c["judge_score"], -i) for i, c in enumerate(e.candidates) if c.get("judge_score") is not None]
        if not scored:
            reason = "no candidates" if not e.candidates else "no candidate was judged"
            rows.append(Entry(oname, e.triplet, None, status="missing", errors=[reason]))
            continue
        best = -max(scored)[1]
        c = e.candidates[best]
        o = Entry(oname, e.triplet, c["image"], candidate=best)
        o.values.update(
            judge_score=c["judge_score"], editing_success=c["editing_success"], minimal_editing=c["minimal_editing"]
        )
        rows.append(o)
    return oname, rows


def usage_note(cfg: JudgeConfig, usage: Any) -> str:
    """The judge's requests, calls, tokens and cost, as a report note."""
    return (
        f"Judge {cfg.model}: {usage.requests} requests, {usage.paid_calls} paid calls, {usage.cached} from the "
        f"cache, {usage.failures} failed calls, {usage.unparsable} unparsable replies; {usage.prompt_tokens:,} "
        f"prompt + {usage.completion_tokens:,} completion tokens = ${usage.cost:.4f} at "
        f"${cfg.price_input_per_1m}/${cfg.price_output_per_1m} per 1M tokens."
    )


def failure_note(name: str, usage: Any, by_model: dict[str, list[Entry]]) -> str:
    """How many requests the judge could not score, and the first reason, as a report note."""
    first = next((err for es in by_model.values() for e in es for err in e.errors if err.startswith("judge:")), "")
    return (
        f"The {name} judge could not score {usage.failures} of {usage.requests} requests; those samples "
        f"have no judge score" + (f" (the first: {first})" if first else "") + "."
    )
