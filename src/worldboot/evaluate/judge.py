"""Judges of next-observation predictions: GPT-4o-as-a-judge (any OpenAI-compatible server) and
the procedural world's own judge.

The OpenAI judge follows the paper's Appendix H: the prompt below verbatim, the source image then
the prediction, temperature 0, two scores ``[editing success, minimal editing]`` from 0 to 10,
and the sample score ``min(ES, ME)``. Around it:

* a SQLite cache keyed by model, prompt text, temperature and the hashes of the two images'
  pixels, so a rerun (or a killed run resumed) never pays for a verdict twice;
* retries with exponential back-off on 429, 5xx, connection errors and time-outs, done by the
  ``openai`` client itself (``max_retries``; it waits 0.5 s, 1 s, 2 s ... up to 8 s with jitter,
  or what a ``Retry-After`` header asks for);
* a thread pool of ``concurrency`` requests;
* a parser that accepts JSON or Python-dict replies, in code fences or with text around them;
  an unparsable reply is kept with its text and counted as a failure, never scored 0;
* a token and cost tally.

The API key is read from the environment variable named by ``api_key_env`` and handed only to
the client: it is never logged, written, or kept in an error message.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Protocol

from PIL import Image

from worldboot.errors import ConfigError, DataError
from worldboot.images import open_image

#: The paper's Appendix H prompt, verbatim (``{instruction}`` is the action; the doubled braces
#: are the paper's own format-string escapes and render as single braces).
JUDGE_PROMPT = """You are a professional digital artist. You will have to evaluate the effectiveness of the AI-generated image(s) based on the given rules.

You will have to give your output in a valid way of a Python dictionary format (Keep your reasoning concise and short.):

{{"score": [...], "reasoning": "..." }}

and don’t output anything else. Two images will be provided:
• The first being the original AI-generated image
• The second being an edited version of the first.

The objective is to evaluate how successfully the editing instruction has been executed in the second image. Note that sometimes the two images might look identical due to a failure in image editing. From a scale of 0 to 10:

• A score from 0 to 10 will be given based on the success of the editing.
– 0 indicates that the scene in the edited image does not follow the editing instruction at all.
– 10 indicates that the scene in the edited image follows the editing instruction text perfectly.
– If the object in the instruction is not present in the original image at all, the score will be 0.
• A second score from 0 to 10 will rate the degree of minimal editing in the second image.
– 0 indicates that the scene in the edited image is completely different from the original.
– 10 indicates that the edited image can be recognised as a minimally edited yet effective version of the original.

Put the score in a list such that: output score = [score1, score2], where score1 evaluates the editing success and score2 evaluates the degree of the minimal editing.
Editing instruction: {instruction}"""

#: Bump when the request format changes in a way that changes replies (part of the cache key).
REQUEST_FORMAT = "v1:text,source,prediction:png"


def build_prompt(action: str) -> str:
    """The judge prompt for one action."""
    return JUDGE_PROMPT.format(instruction=action)


@dataclass
class JudgeConfig:
    """Which judge scores predictions, and how the OpenAI-compatible one is called.

    Attributes:
        type: ``openai`` (GPT-4o-as-a-judge on any OpenAI-compatible server), ``world`` (the
            procedural world's exact judge; only for its own benchmarks) or ``none``.
        model: Model name sent to the server; the paper used ``gpt-4o-2024-11-20``.
        base_url: Server URL (e.g. ``http://localhost:8000/v1`` for vLLM); None uses the
            client's default (``OPENAI_BASE_URL`` or api.openai.com).
        api_key_env: Name of the environment variable that holds the key.
        temperature: 0 as in the paper: the verdict should not depend on luck.
        max_tokens: Upper bound on the reply; the reasoning is asked to be short.
        timeout: Seconds per request before it counts as timed out (and is retried).
        max_retries: Retries of the ``openai`` client on 429, 5xx, connection errors and
            time-outs, with exponential back-off.
        concurrency: Requests in flight at once (threads).
        cache: SQLite file of paid replies; empty means ``<report dir>/judge_cache.sqlite``.
        price_input_per_1m: Price of 1M prompt tokens, for the cost tally (gpt-4o list price).
        price_output_per_1m: Price of 1M completion tokens.
        max_image_side: Downscale images whose longer side exceeds this before sending (0 = send
            as they are); fewer image tokens, lower cost.
        retry_unparsable: Ask again, on a rerun, for cached replies that could not be parsed
            (off by default: at temperature 0 the same reply comes back, and it was paid once).
    """

    type: Literal["openai", "world", "none"] = "openai"
    model: str = "gpt-4o-2024-11-20"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    temperature: float = 0.0
    max_tokens: int = 512
    timeout: float = 120.0
    max_retries: int = 6
    concurrency: int = 4
    cache: str = ""
    price_input_per_1m: float = 2.50
    price_output_per_1m: float = 10.00
    max_image_side: int = 0
    retry_unparsable: bool = False


@dataclass
class JudgeRequest:
    """One prediction to judge.

    Attributes:
        source: Path of the source observation.
        action: The action (the prompt's editing instruction).
        prediction: Path of the predicted observation.
        triplet: The sample, for judges that read its metadata (the procedural world's judge
            takes the true scenes from ``meta``); the OpenAI judge ignores it.
    """

    source: str
    action: str
    prediction: str
    triplet: Any = None


@dataclass
class Verdict:
    """A judge's answer for one request.

    Attributes:
        editing_success: ES, 0-10 (None when the judge failed).
        minimal_editing: ME, 0-10.
        score: ``min(ES, ME)``.
        reasoning: The judge's short reasoning, when it gives one.
        error: Why there is no score (API down, unparsable reply, unreadable image).
        raw: The reply text as received (kept for unparsable replies).
        cached: True when the reply came from the cache (nothing paid).
        prompt_tokens: Prompt tokens of the paid call (0 when cached).
        completion_tokens: Completion tokens of the paid call.
        details: Judge-specific extras (the world judge's per-object findings).
    """

    editing_success: float | None = None
    minimal_editing: float | None = None
    score: float | None = None
    reasoning: str | None = None
    error: str | None = None
    raw: str | None = None
    cached: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the verdict holds a score."""
        return self.score is not None

    def to_json(self) -> dict[str, Any]:
        """Plain data for ``results.jsonl``."""
        out = asdict(self)
        if out["error"] is None:
            out.pop("raw")  # the parsed fields say it all; keep raw text only for failures
        return out


@dataclass
class Usage:
    """Token and cost tally of a judge over a run."""

    requests: int = 0
    paid_calls: int = 0
    cached: int = 0
    failures: int = 0
    unparsable: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    price_input_per_1m: float = 0.0
    price_output_per_1m: float = 0.0

    @property
    def cost(self) -> float:
        """Money spent by the paid calls, at the configured prices."""
        return (
            self.prompt_tokens * self.price_input_per_1m + self.completion_tokens * self.price_output_per_1m
        ) / 1e6

    def to_json(self) -> dict[str, Any]:
        """Plain data, with the cost."""
        return {**asdict(self), "cost": round(self.cost, 6)}


class Judge(Protocol):
    """Anything that turns requests into verdicts."""

    name: str
    usage: Usage

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        """One verdict per request, in order; failures are verdicts with ``error`` set."""
        ...


# -- parsing -------------------------------------------------------------------------------


class VerdictParseError(ValueError):
    """A reply in which no ``score: [ES, ME]`` can be found."""


_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.S)
_SCORE_RE = re.compile(
    r"""["']?score["']?\s*[:=]\s*\[\s*["']?(-?\d+(?:\.\d+)?)["']?\s*,\s*["']?(-?\d+(?:\.\d+)?)["']?\s*\]""",
    re.I,
)
_REASON_RE = re.compile(r"""["']?reasoning["']?\s*:\s*(["'])(.*?)\1\s*[,}]""", re.I | re.S)


def _balanced_objects(text: str) -> list[str]:
    """Substrings ``{...}`` with balanced braces, skipping braces inside quoted strings."""
    found = []
    for start, ch in enumerate(text):
        if ch != "{":
            continue
        depth, quote, escaped = 0, None, False
        for end in range(start, len(text)):
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
    for piece in pieces:
        for snippet in _balanced_objects(piece):
            data = _as_mapping(snippet)
            if data is None:
                continue
            keys = {str(k).strip().lower(): v for k, v in data.items()}
            if "score" not in keys:
                continue
            score = keys["score"]
            if not isinstance(score, (list, tuple)) or len(score) != 2:
                raise VerdictParseError(f"'score' must be a list of two numbers, got {score!r}")
            reasoning = keys.get("reasoning")
            return _number(score[0]), _number(score[1]), str(reasoning) if reasoning is not None else None
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


# -- cache -----------------------------------------------------------------------------------


class JudgeCache:
    """Paid replies in SQLite, keyed by a hash of everything that decides the reply.

    One connection shared by the worker threads behind a lock (SQLite writes are serial anyway);
    every insert is committed at once so a killed run keeps what it paid for.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT, reply TEXT,"
                " prompt_tokens INTEGER, completion_tokens INTEGER, created REAL)"
            )
            self._db.commit()
        except sqlite3.DatabaseError as err:
            raise DataError(f"judge cache {self.path} is not a usable SQLite file: {err}") from None

    def get(self, key: str) -> tuple[str, int, int] | None:
        """``(reply, prompt_tokens, completion_tokens)`` or None."""
        with self._lock:
            row = self._db.execute(
                "SELECT reply, prompt_tokens, completion_tokens FROM replies WHERE key = ?", (key,)
            ).fetchone()
        return (row[0], int(row[1]), int(row[2])) if row else None

    def put(self, key: str, model: str, reply: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Store one reply (replacing any earlier one under the key)."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, reply, prompt_tokens, completion_tokens, time.time()),
            )
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()


# -- OpenAI-compatible judge ----------------------------------------------------------------------


def encode_image(path: str, max_side: int = 0) -> tuple[str, str]:
    """An image as a PNG data URL, and the hash of the pixels sent.

    The hash is over the decoded pixels (not the file bytes), so the same picture saved as JPEG
    in one run and PNG in another is judged once. PNG keeps the pixels exact.

    Raises:
        DataError: When the image cannot be read.
    """
    img = open_image(path)
    if max_side and max(img.size) > max_side:
        img.thumbnail((max_side, max_side), Image.LANCZOS)
    digest = hashlib.sha256(f"{img.width}x{img.height}:".encode() + img.tobytes()).hexdigest()
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), digest


def _scrub(text: str, secret: str | None) -> str:
    """``text`` with the secret removed (server error bodies may echo a key)."""
    if secret:
        text = text.replace(secret, "***")
        if len(secret) > 8:
            text = text.replace(secret[-4:], "****")
    return text


class OpenAIJudge:
    """GPT-4o-as-a-judge on an OpenAI-compatible chat-completions server.

    Args:
        cfg: The judge config.
        cache_path: The SQLite cache file.
        client: An ``openai.OpenAI`` client to use instead of one built from ``cfg``.

    Raises:
        ConfigError: When the key's environment variable is unset.
    """

    name = "openai"

    def __init__(self, cfg: JudgeConfig, cache_path: str | os.PathLike[str], client: Any = None) -> None:
        self.cfg = cfg
        self.usage = Usage(price_input_per_1m=cfg.price_input_per_1m, price_output_per_1m=cfg.price_output_per_1m)
        self._lock = threading.Lock()
        self._secret = os.environ.get(cfg.api_key_env)
        if client is None:
            if not self._secret:
                raise ConfigError(
                    f"judge 'openai' needs an API key in the environment variable {cfg.api_key_env}"
                    " (or judge.api_key_env=NAME); use --judge none to skip the judge"
                )
            import openai

            # The client retries 429, 408/409, 5xx, connection errors and time-outs itself, with
            # exponential back-off (0.5 s doubling to 8 s, jittered) or the server's Retry-After.
            client = openai.OpenAI(
                api_key=self._secret, base_url=cfg.base_url or None, max_retries=cfg.max_retries, timeout=cfg.timeout
            )
        self.client = client
        self.cache = JudgeCache(cache_path)

    def _key(self, prompt: str, src_hash: str, pred_hash: str) -> str:
        blob = json.dumps([REQUEST_FORMAT, self.cfg.model, self.cfg.temperature, prompt, src_hash, pred_hash])
        return hashlib.sha256(blob.encode()).hexdigest()

    def _call(self, prompt: str, src_url: str, pred_url: str) -> tuple[str, int, int]:
        response = self.client.chat.completions.create(
            model=self.cfg.model,
            temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_tokens,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": prompt},
                        {"type": "image_url", "image_url": {"url": src_url}},
                        {"type": "image_url", "image_url": {"url": pred_url}},
                    ],
                }
            ],
        )
        if not response.choices:
            raise ValueError("the server returned no choices")
        text = response.choices[0].message.content or ""
        usage = response.usage
        return text, int(getattr(usage, "prompt_tokens", 0) or 0), int(getattr(usage, "completion_tokens", 0) or 0)

    def _judge_one(self, item: tuple[str, str, str, str]) -> Verdict:
        key, prompt, src_url, pred_url = item
        hit = self.cache.get(key)
        if hit is not None:
            verdict = verdict_from_reply(hit[0])
            if verdict.ok or not self.cfg.retry_unparsable:
                verdict.cached = True
                return verdict
        import openai

        try:
            text, pt, ct = self._call(prompt, src_url, pred_url)
        except (openai.OpenAIError, ValueError) as err:
            # After the client's own retries: the judge is down, refuses, or times out.
            with self._lock:
                self.usage.failures += 1
            detail = _scrub(str(err).splitlines()[0] if str(err) else "", self._secret)
            return Verdict(error=f"judge unavailable: {type(err).__name__}: {detail}"[:500])
        self.cache.put(key, self.cfg.model, text, pt, ct)
        with self._lock:
            self.usage.paid_calls += 1
            self.usage.prompt_tokens += pt
            self.usage.completion_tokens += ct
        verdict = verdict_from_reply(text)
        verdict.prompt_tokens, verdict.completion_tokens = pt, ct
        return verdict

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        """Judge every request; identical (prompt, source pixels, prediction pixels) are asked once.

        Args:
            requests: What to judge.
            progress: Called with the number of requests finished since the last call.

        Returns:
            One verdict per request, in order.
        """
        verdicts: list[Verdict | None] = [None] * len(requests)
        jobs: dict[str, tuple[str, str, str, str]] = {}
        owners: dict[str, list[int]] = {}
        encoded: dict[str, tuple[str, str]] = {}
        for i, req in enumerate(requests):
            try:
                for path in (req.source, req.prediction):
                    if path not in encoded:
                        encoded[path] = encode_image(path, self.cfg.max_image_side)
            except DataError as err:
                verdicts[i] = Verdict(error=str(err))
                if progress:
                    progress(1)
                continue
            prompt = build_prompt(req.action)
            (src_url, src_hash), (pred_url, pred_hash) = encoded[req.source], encoded[req.prediction]
            key = self._key(prompt, src_hash, pred_hash)
            jobs.setdefault(key, (key, prompt, src_url, pred_url))
            owners.setdefault(key, []).append(i)

        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            for key, verdict in zip(jobs, pool.map(self._judge_one, jobs.values()), strict=True):
                for n, i in enumerate(owners[key]):
                    # Only the first owner paid; the others share the reply as cache hits.
                    verdicts[i] = verdict if n == 0 else replace(verdict, cached=True, prompt_tokens=0, completion_tokens=0)
                if progress:
                    progress(len(owners[key]))
        out = [v if v is not None else Verdict(error="not judged") for v in verdicts]
        self.usage.requests += len(out)
        self.usage.cached += sum(v.cached for v in out)
        self.usage.unparsable += sum(1 for v in out if v.error and v.error.startswith("unparsable"))
        return out

    def close(self) -> None:
        """Close the cache and the HTTP client."""
        self.cache.close()
        close = getattr(self.client, "close", None)
        if callable(close):
            close()


# -- the procedural world's judge -------------------------------------------------------------


class WorldJudge:
    """The procedural world's exact judge: it parses the rendered scenes instead of asking a VLM.

    With the sample at hand it calls ``judge_triplet(triplet, predicted_image)``, which takes the
    true source and target scenes and the structured action from the triplet's ``meta`` (as the
    world's generator writes them); otherwise ``judge(source_image, action, predicted_image)``
    parses the source. Both return ``editing_success``, ``minimal_editing``, ``score`` and
    ``details``. An action or image the world cannot read is a per-sample failure.
    """

    name = "world"

    def __init__(self) -> None:
        from worldboot.world.judge import judge, judge_triplet

        self._judge = judge
        self._judge_triplet = judge_triplet
        self.usage = Usage()

    def _one(self, req: JudgeRequest) -> Verdict:
        try:
            predicted = open_image(req.prediction)
            source = open_image(req.source) if req.triplet is None else None
        except DataError as err:
            return Verdict(error=str(err))
        try:
            if source is None:
                res = self._judge_triplet(req.triplet, predicted)
            else:
                res = self._judge(source, req.action, predicted)
        except (ValueError, KeyError, DataError) as err:
            # The world judge refuses actions or scenes it cannot parse: a per-sample failure.
            return Verdict(error=f"world judge: {type(err).__name__}: {err}"[:500])
        details = getattr(res, "details", None) or {}
        es, me = float(res.editing_success), float(res.minimal_editing)
        score = getattr(res, "score", None)
        return Verdict(
            editing_success=es,
            minimal_editing=me,
            score=float(score) if score is not None else min(es, me),
            details=json.loads(json.dumps(details, default=str)),
        )

    def judge_many(
        self, requests: Sequence[JudgeRequest], progress: Callable[[int], None] | None = None
    ) -> list[Verdict]:
        """Judge every request in order."""
        out = []
        for req in requests:
            out.append(self._one(req))
            if progress:
                progress(1)
        self.usage.requests += len(out)
        self.usage.failures += sum(1 for v in out if not v.ok)
        return out

    def close(self) -> None:
        """Nothing to release."""


def make_judge(cfg: JudgeConfig, cache_path: str | os.PathLike[str]) -> Judge | None:
    """The judge ``cfg.type`` names, or None for ``none``."""
    if cfg.type == "none":
        return None
    if cfg.type == "world":
        return WorldJudge()
    return OpenAIJudge(cfg, os.path.expanduser(cfg.cache) if cfg.cache else cache_path)
