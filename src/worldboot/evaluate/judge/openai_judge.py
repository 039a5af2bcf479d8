"""GPT-4o as the judge, through the ``openai`` client and any OpenAI-compatible server: concurrency, retries, the key never in an error message."""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from PIL import Image

from worldboot.errors import ConfigError, DataError
from worldboot.evaluate.judge.base import (
    REQUEST_FORMAT,
    JudgeConfig,
    JudgeRequest,
    Usage,
    Verdict,
    build_prompt,
)
from worldboot.evaluate.judge.cache import JudgeCache
from worldboot.evaluate.judge.parse import verdict_from_reply
from worldboot.evaluate.judge.reach import Reachability
from worldboot.images import open_image

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


class BadReply(ValueError):
    """A reply that is not a usable chat completion, with the tokens it was billed for."""

    def __init__(self, message: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        super().__init__(message)
        self.prompt_tokens, self.completion_tokens = prompt_tokens, completion_tokens


def _tokens(usage: Any, name: str) -> int:
    value = getattr(usage, name, None)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else 0


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
        self.reach = Reachability(cfg.concurrency, cfg.base_url or "the client's default server")

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
        # Whatever the server sent: an OpenAI-compatible server (or a web page at a wrong
        # base_url) may answer in shapes the client does not check.
        usage = getattr(response, "usage", None)
        pt, ct = _tokens(usage, "prompt_tokens"), _tokens(usage, "completion_tokens")
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):
            raise BadReply(f"not a chat completion (the server answered {type(response).__name__})", pt, ct)
        if not choices:
            raise BadReply("the server returned no choices", pt, ct)
        message = getattr(choices[0], "message", None)
        content = getattr(message, "content", None)
        if isinstance(content, list):  # content parts
            content = "".join(str(part.get("text", "")) if isinstance(part, dict) else str(getattr(part, "text", ""))
                              for part in content)
        if not content and getattr(message, "refusal", None):
            content = f"refusal: {message.refusal}"  # kept, so the report shows why there is no score
        return content if isinstance(content, str) else "", pt, ct

    def _failed(self, err: Exception) -> Verdict:
        """The verdict of a request that failed after the client's own retries (the judge is
        down, refuses, times out, or answers with no chat completion), tallied."""
        import openai

        detail = _scrub(str(err).splitlines()[0] if str(err) else "", self._secret)
        detail = f"{type(err).__name__}: {detail}"
        if isinstance(err, openai.APIConnectionError) and not isinstance(err, openai.APITimeoutError):
            self.reach.unreachable(detail[:200])
        else:  # an error status, a time-out or a bad reply: the server is there
            self.reach.answered()
        with self._lock:
            self.usage.failures += 1
            if isinstance(err, BadReply) and (err.prompt_tokens or err.completion_tokens):  # billed all the same
                self.usage.paid_calls += 1
                self.usage.prompt_tokens += err.prompt_tokens
                self.usage.completion_tokens += err.completion_tokens
        return Verdict(error=f"judge unavailable: {detail}"[:500])

    def _judge_one(self, item: tuple[str, str, str, str]) -> Verdict:
        key, prompt, src_url, pred_url = item
        hit = self.cache.get(key)
        if hit is not None:
            verdict = verdict_from_reply(hit[0])
            if verdict.ok or not self.cfg.retry_unparsable:
                verdict.cached = True
                return verdict
        if self.reach.halted:  # the server cannot be reached, or refused the key: ask no more
            return Verdict(error=f"not asked: {self.reach.halted}")
        import openai

        try:
            text, pt, ct = self._call(prompt, src_url, pred_url)
        except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
            # A wrong key, model or base_url fails every request alike: stop at the first.
            self.reach.halt("the judge refused an earlier request")
            detail = _scrub(str(err).splitlines()[0] if str(err) else "", self._secret)
            raise ConfigError(
                f"the judge refused the request ({type(err).__name__}: {detail[:200]}): check "
                f"${self.cfg.api_key_env}, judge.model ({self.cfg.model}) and judge.base_url"
            ) from None
        except (openai.OpenAIError, ValueError) as err:
            return self._failed(err)
        self.reach.answered()
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

        keys, items = list(jobs), list(jobs.values())
        # The first request sent goes alone: a server that cannot be reached costs the retries
        # of one request, not of a batch of them (the cache answers the ones before it).
        probed: list[Verdict] = []
        while len(probed) < len(items) and not self.reach.tried:
            probed.append(self._judge_one(items[len(probed)]))
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            rest = pool.map(self._judge_one, items[len(probed):])
            for key, verdict in zip(keys, itertools.chain(probed, rest), strict=True):
                for n, i in enumerate(owners[key]):
                    # Only the first owner paid; the others share the reply as cache hits.
                    verdicts[i] = verdict if n == 0 else replace(verdict, cached=True, prompt_tokens=0, completion_tokens=0)
                if progress:
                    progress(len(owners[key]))
        unreachable = self.reach.error(self.cfg.max_retries, len(self.cache), str(self.cache.path))
        if unreachable is not None:
            raise unreachable
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
