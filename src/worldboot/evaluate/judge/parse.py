"""Reading a judge's reply: the JSON object with the two scores, however a model wraps it (code fences, single quotes, prose around it)."""

from __future__ import annotations

import ast
import json
import re
from typing import Any

from worldboot.evaluate.judge.base import Verdict

# -- parsing -------------------------------------------------------------------------------


class VerdictParseError(ValueError):
    """A reply in which no ``score: [ES, ME]`` can be found."""


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_SCORE_RE = re.compile(
    r"""["']?score["']?\s*[:=]\s*\[\s*["']?(-?\d+(?:\.\d+)?)["']?\s*,\s*["']?(-?\d+(?:\.\d+)?)["']?\s*\]""",
    re.I,
)
_REASON_RE = re.compile(r"""["']?reasoning["']?\s*:\s*(["'])(.*?)\1\s*[,}]""", re.I | re.S)


#: Longest ``{...}`` looked for, and most ``{`` tried as its start: a verdict is a few hundred
#: characters, and scanning every brace of a long junk reply to its end is quadratic (1.5 s for
#: 8 KB of "x{" before these bounds, measured).
MAX_OBJECT_CHARS = 4000
MAX_OBJECT_STARTS = 200


def _balanced_objects(text: str) -> list[str]:
    """Substrings ``{...}`` with balanced braces, skipping braces inside quoted strings (at
    most :data:`MAX_OBJECT_STARTS` starts, each at most :data:`MAX_OBJECT_CHARS` long)."""
    found = []
    starts = [i for i, ch in enumerate(text) if ch == "{"][:MAX_OBJECT_STARTS]
    for start in starts:
        depth, quote, escaped = 0, None, False
        for end in range(start, min(len(text), start + MAX_OBJECT_CHARS)):
            c = text[end]
            if quote:
                if escaped:
                    escaped = False
                elif c == "\\":
                    escaped = True
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    found.append(text[start : end + 1])
                    break
    return found


def _as_mapping(snippet: str) -> dict | None:
    for load in (json.loads, ast.literal_eval):
        try:
            value = load(snippet)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise VerdictParseError(f"score entry is not a number: {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise VerdictParseError(f"score entry is not a number: {value!r}") from None
    if not 0.0 <= number <= 10.0:
        raise VerdictParseError(f"score {number} is outside 0-10")
    return number


def parse_verdict(text: str) -> tuple[float, float, str | None]:
    """Read ``{"score": [ES, ME], "reasoning": ...}`` out of a judge's reply.

    Written by hand because replies mix JSON, Python literals (single quotes), code fences and
    prose, and no maintained library parses "a dict literal somewhere in this text". Tries, in
    order: each fenced block then the whole text, every balanced ``{...}`` as JSON then as a
    Python literal; last, a ``score: [a, b]`` pattern (a reply cut off inside its reasoning).

    Returns:
        ``(editing_success, minimal_editing, reasoning)``.

    Raises:
        VerdictParseError: When no two scores in 0-10 can be found.
    """
    if not isinstance(text, str) or not text.strip():
        raise VerdictParseError("empty reply")
    pieces = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    first_error: VerdictParseError | None = None
    for piece in pieces:
        for snippet in _balanced_objects(piece):
            data = _as_mapping(snippet)
            if data is None:
                continue
            keys = {str(k).strip().lower(): v for k, v in data.items()}
            if "score" not in keys:
                continue
            score = keys["score"]
            reasoning = keys.get("reasoning")
            try:
                if not isinstance(score, (list, tuple)) or len(score) != 2:
                    raise VerdictParseError(f"'score' must be a list of two numbers, got {score!r}")
                return _number(score[0]), _number(score[1]), str(reasoning) if reasoning is not None else None
            except VerdictParseError as err:  # e.g. the prompt's template echoed before the answer
                first_error = first_error or err
    if first_error is not None:
        raise first_error
    match = _SCORE_RE.search(text)
    if match:
        reason = _REASON_RE.search(text)
        return _number(match.group(1)), _number(match.group(2)), reason.group(2) if reason else None
    raise VerdictParseError("no 'score': [ES, ME] in the reply")


def verdict_from_reply(reply: str | None) -> Verdict:
    """A verdict from a reply's text; an unparsable reply becomes a failure that keeps the text."""
    try:
        es, me, reasoning = parse_verdict(reply or "")
    except VerdictParseError as err:
        return Verdict(error=f"unparsable reply: {err}", raw=reply)
    return Verdict(editing_success=es, minimal_editing=me, score=min(es, me), reasoning=reasoning, raw=reply)
